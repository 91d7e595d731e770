;; A minimal hand-written hook plugin (the core module; tests wrap it into a component of
;; hoist:hooks/hook with wit-component): every hook succeeds with empty texts.
;;
;; The answers are read from offset 1024, which is zero: for `result<outcome, hook-error>`
;; that is ok(done("")); for `result<_, hook-error>` and `result<_, string>`, ok. Arguments are
;; copied in through a bump allocator above 4096 and never read.
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $size i32) (result i32)
    (local $p i32)
    ;; p = align_up(heap, align)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    ;; Two pages are plenty for a test context; more is a test bug.
    (if (i32.gt_u (global.get $heap) (i32.const 131072)) (then unreachable))
    (local.get $p))

  (func (export "hoist:hooks/hooks@0.1.1#pre-scale") (param i32) (result i32)
    (i32.const 1024))
  (func (export "hoist:hooks/hooks@0.1.1#post-scale") (param i32) (result i32)
    (i32.const 1024))
  (func (export "hoist:hooks/hooks@0.1.1#on-failure") (param i32) (result i32)
    (i32.const 1024))
  (func (export "hoist:hooks/hooks@0.1.1#validate-config") (param i32 i32) (result i32)
    (i32.const 1024))
)
