;; A core module that only holds a memory of 60 MiB (960 pages of 64 KiB), touched at its
;; last page by a data segment. Tests instantiate several beside a plugin: each memory is
;; under a 64 MiB limit, together they are far above it.
(module
  (memory 960)
  (data (i32.const 62914000) "hoist")
)
