;; The plugin of hooks.wat, plus a start function that never returns: creating an instance
;; for a call runs forever (until the call's deadline interrupts it).
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))

  (func $forever (loop $again (br $again)))
  (start $forever)

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $size i32) (result i32)
    (local $p i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
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
