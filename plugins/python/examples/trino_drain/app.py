"""trino-drain in Python: before a scale-down, asks every leaving Trino worker to drain
(`PUT /v1/info/state "DRAINING"`) and polls until each reports `DRAINED`; if the operation
fails, puts them back `ACTIVE`. The same logic as the Rust plugin in plugins/trino-drain.
"""

import hoist_sdk
from hoist_sdk import http

SCHEMA = {"port": int, "pollIntervalMs": (int, 2000), "user": (str, "hoist")}


def state_url(ip: str, port: int) -> str:
    return f"http://{http.host_port(ip, port)}/v1/info/state"


class TrinoDrain(hoist_sdk.Hook):
    def pre_scale(self, ctx):
        config = hoist_sdk.config.parse(ctx.config, SCHEMA)
        headers = {"X-Trino-User": config["user"]}
        draining = 0
        for pod in ctx.pods_removed:
            if pod.ip is None:
                continue
            url = state_url(pod.ip, config["port"])
            state = http.get(url, headers=headers).error_for_status().json()
            if state == "DRAINED":
                continue
            if state != "DRAINING":
                # Idempotent: asking again after a retry is harmless.
                http.put(url, headers=headers, json="DRAINING").error_for_status()
            draining += 1
        if draining:
            hoist_sdk.info(f"{draining} worker(s) still draining")
            return hoist_sdk.in_progress(
                "draining", config["pollIntervalMs"], f"{draining} worker(s) draining"
            )
        return hoist_sdk.done(f"{len(ctx.pods_removed)} worker(s) drained")

    def on_failure(self, ctx, failure):
        config = hoist_sdk.config.parse(ctx.config, SCHEMA)
        headers = {"X-Trino-User": config["user"]}
        for pod in ctx.pods_removed:
            if pod.ip is not None:
                http.put(state_url(pod.ip, config["port"]), headers=headers, json="ACTIVE").error_for_status()

    def validate_config(self, config_text):
        hoist_sdk.config.parse(config_text, SCHEMA)


Hooks = hoist_sdk.export(TrinoDrain)
