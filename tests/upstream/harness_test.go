// The upstream autoscalers, driven over metric traces for hoist's differential test
// (host/decide/tests/upstream_diff.rs). Built by tests/upstream/build as a test binary, because
// the HPA controller reads the wall clock (time.Now): each HPA trace runs in a testing/synctest
// bubble, whose fake clock moves only when the trace's tick sleeps. Knative's autoscaler takes
// the time as an argument (its metrics reporting cannot run in a bubble): its traces run on the
// times now, now + interval, ..., without waiting.
//
// Input (stdin): {"cases": [case, ...]}; output: one JSON line per case,
// {"name": ..., "replicas": [count after each tick]}.
//
// Each case is a closed loop like `hoist simulate`'s replay: a decision every interval, the
// count it asks for written at once, new replicas ready readyDelaySeconds later, removed
// replicas going at once (not-yet-ready ones first).
package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/kubernetes/pkg/controller/podautoscaler"
	metricsclient "k8s.io/kubernetes/pkg/controller/podautoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/aggregation"
	"knative.dev/serving/pkg/autoscaler/scaling"
)

type traces struct {
	Cases []traceCase `json:"cases"`
}

type traceCase struct {
	Name              string    `json:"name"`
	Algorithm         string    `json:"algorithm"` // "hpa" or "kpa"
	IntervalSeconds   int64     `json:"intervalSeconds"`
	Initial           int32     `json:"initial"`
	Min               int32     `json:"min"`
	Max               int32     `json:"max"`
	ReadyDelaySeconds int64     `json:"readyDelaySeconds"`
	Target            float64   `json:"target"`
	Values            []float64 `json:"values"` // the metric's total at each tick
	Hpa               *hpaCase  `json:"hpa,omitempty"`
	Kpa               *kpaCase  `json:"kpa,omitempty"`
}

type hpaCase struct {
	Tolerance float64                                       `json:"tolerance"`
	Behavior  autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
}

type kpaCase struct {
	StableWindowSeconds   int64   `json:"stableWindowSeconds"`
	PanicWindowPercentage float64 `json:"panicWindowPercentage"`
	PanicThreshold        float64 `json:"panicThreshold"`
	MaxScaleUpRate        float64 `json:"maxScaleUpRate"`
	MaxScaleDownRate      float64 `json:"maxScaleDownRate"`
	TargetUtilization     float64 `json:"targetUtilization"`
}

type result struct {
	Name     string  `json:"name"`
	Replicas []int32 `json:"replicas"`
	Error    string  `json:"error,omitempty"`
}

// workload: every replica's ready time.
type workload struct{ ready []time.Time }

func (w *workload) count() int32 { return int32(len(w.ready)) }

func (w *workload) readyAt(now time.Time) int32 {
	n := int32(0)
	for _, r := range w.ready {
		if !r.After(now) {
			n++
		}
	}
	return n
}

func (w *workload) scale(n int32, now time.Time, delay time.Duration) {
	if n > w.count() {
		for w.count() < n {
			w.ready = append(w.ready, now.Add(delay))
		}
		return
	}
	sort.Slice(w.ready, func(i, j int) bool { return w.ready[i].Before(w.ready[j]) })
	w.ready = w.ready[:n]
}

func TestHarness(t *testing.T) {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		t.Fatalf("reading stdin: %v", err)
	}
	var in traces
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatalf("parsing the traces: %v", err)
	}
	// Per-direction tolerances (behavior.scaleUp/scaleDown.tolerance) are alpha in 1.34.
	if err := utilfeature.DefaultMutableFeatureGate.Set("HPAConfigurableTolerance=true"); err != nil {
		t.Fatalf("feature gate: %v", err)
	}
	out := json.NewEncoder(os.Stdout)
	for _, c := range in.Cases {
		var r result
		interval := time.Duration(c.IntervalSeconds) * time.Second
		if c.Algorithm == "hpa" {
			synctest.Test(t, func(t *testing.T) {
				r = run(c, time.Now(), func() { time.Sleep(interval) })
			})
		} else {
			r = run(c, time.Now().Truncate(interval), func() {})
		}
		if err := out.Encode(r); err != nil {
			t.Fatalf("writing: %v", err)
		}
	}
}

// run replays one case; the tick i is at start + i × interval, and wait moves the wall clock
// there (in a synctest bubble) or does nothing.
func run(c traceCase, start time.Time, wait func()) result {
	r := result{Name: c.Name}
	w := &workload{}
	w.scale(c.Initial, start.Add(-time.Duration(c.ReadyDelaySeconds)*time.Second), time.Duration(c.ReadyDelaySeconds)*time.Second)
	interval := time.Duration(c.IntervalSeconds) * time.Second
	delay := time.Duration(c.ReadyDelaySeconds) * time.Second
	var decide func(now time.Time, value float64) (int32, error)
	switch c.Algorithm {
	case "hpa":
		decide = hpaDecider(c, w)
	case "kpa":
		decide = kpaDecider(c, w, start)
	default:
		r.Error = "unknown algorithm " + c.Algorithm
		return r
	}
	for i, v := range c.Values {
		if i > 0 {
			wait()
		}
		now := start.Add(time.Duration(i) * interval)
		n, err := decide(now, v)
		if err != nil {
			r.Error = fmt.Sprintf("tick %d: %v", i, err)
			return r
		}
		if n != w.count() {
			w.scale(n, now, delay)
		}
		r.Replicas = append(r.Replicas, w.count())
	}
	return r
}

// externalMetric serves the trace's current value as an External metric, in milli-units.
type externalMetric struct{ milli int64 }

func (m *externalMetric) GetResourceMetric(context.Context, v1.ResourceName, string, labels.Selector, string) (metricsclient.PodMetricsInfo, time.Time, error) {
	return nil, time.Time{}, fmt.Errorf("not served")
}

func (m *externalMetric) GetRawMetric(string, string, labels.Selector, labels.Selector) (metricsclient.PodMetricsInfo, time.Time, error) {
	return nil, time.Time{}, fmt.Errorf("not served")
}

func (m *externalMetric) GetObjectMetric(string, string, *autoscalingv2.CrossVersionObjectReference, labels.Selector) (int64, time.Time, error) {
	return 0, time.Time{}, fmt.Errorf("not served")
}

func (m *externalMetric) GetExternalMetric(string, string, labels.Selector) ([]int64, time.Time, error) {
	return []int64{m.milli}, time.Now(), nil
}

// hpaDecider runs what the HPA controller's reconcileAutoscaler runs for one External metric
// with an AverageValue target: the initial recommendation, the replica calculator, the
// behavior's stabilization and rate limits, and the scale event of a rescale.
func hpaDecider(c traceCase, w *workload) func(time.Time, float64) (int32, error) {
	metric := &externalMetric{}
	ctl := podautoscaler.NewHoistController(c.Hpa.Tolerance, 5*time.Minute, metric)
	behavior := c.Hpa.Behavior
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: "trace", Name: c.Name},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			MinReplicas: &c.Min,
			MaxReplicas: c.Max,
			Behavior:    &behavior,
		},
	}
	key := "trace/" + c.Name
	return func(_ time.Time, value float64) (int32, error) {
		current := w.count()
		ctl.RecordInitialRecommendation(current, key)
		metric.milli = int64(math.Round(value * 1000))
		desired, err := ctl.ExternalPerPodReplicas(hpa, current, int64(math.Round(c.Target*1000)), "trace")
		if err != nil {
			return 0, err
		}
		desired = ctl.NormalizeDesiredReplicasWithBehaviors(hpa, key, current, desired, c.Min)
		if desired != current {
			ctl.StoreScaleEvent(hpa.Spec.Behavior, key, current, desired)
		}
		return desired, nil
	}
}

// bucketsClient is Knative's MetricClient over its own aggregation buckets, one record per
// tick (the bucket is the decision interval: hoist samples its metric once per decision).
type bucketsClient struct {
	stable, panic *aggregation.TimedFloat64Buckets
}

func (b *bucketsClient) StableAndPanicConcurrency(_ types.NamespacedName, now time.Time) (float64, float64, error) {
	return b.stable.WindowAverage(now), b.panic.WindowAverage(now), nil
}

func (b *bucketsClient) StableAndPanicRPS(key types.NamespacedName, now time.Time) (float64, float64, error) {
	return b.StableAndPanicConcurrency(key, now)
}

type readyCounter struct {
	w   *workload
	now func() time.Time
}

func (r readyCounter) ReadyCount() (int, error) { return int(r.w.readyAt(r.now())), nil }

func (r readyCounter) NotReadyCount() (int, error) {
	return int(r.w.count() - r.w.readyAt(r.now())), nil
}

// kpaDecider runs Knative's autoscaler (scaling.New, Scale) and clamps its answer to the
// bounds, as the KPA reconciler applies min-scale and max-scale.
func kpaDecider(c traceCase, w *workload, start time.Time) func(time.Time, float64) (int32, error) {
	k := c.Kpa
	stable := time.Duration(k.StableWindowSeconds) * time.Second
	panicWindow := time.Duration(float64(stable) * k.PanicWindowPercentage / 100.0).Round(time.Second)
	interval := time.Duration(c.IntervalSeconds) * time.Second
	client := &bucketsClient{
		stable: aggregation.NewTimedFloat64Buckets(stable, interval),
		panic:  aggregation.NewTimedFloat64Buckets(panicWindow, interval),
	}
	// scaling.New starts in panic at time.Now() when more than one pod is ready: a moment
	// after start, less than an interval, which decides at the same ticks as start itself.
	tickTime := start
	counter := readyCounter{w: w, now: func() time.Time { return tickTime }}
	spec := &scaling.DeciderSpec{
		MaxScaleUpRate:   k.MaxScaleUpRate,
		MaxScaleDownRate: k.MaxScaleDownRate,
		ScalingMetric:    "concurrency",
		TargetValue:      c.Target * k.TargetUtilization,
		TotalValue:       c.Target,
		PanicThreshold:   k.PanicThreshold,
		StableWindow:     stable,
		Reachable:        true,
	}
	scaler := scaling.New(context.Background(), "trace", c.Name, client, counter, spec)
	logger := zap.NewNop().Sugar()
	return func(now time.Time, value float64) (int32, error) {
		tickTime = now
		client.stable.Record(now, value)
		client.panic.Record(now, value)
		res := scaler.Scale(logger, now)
		if !res.ScaleValid {
			return 0, fmt.Errorf("knative's Scale returned an invalid result")
		}
		return min(max(res.DesiredPodCount, c.Min), c.Max), nil
	}
}
