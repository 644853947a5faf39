//! The global allocator of hookrelay's binaries (`hookrelay` and `hookrelay-floor`):
//! jemalloc, with less CPU per allocation than glibc malloc and less memory held than
//! mimalloc in the same run (docs/benchmarks.md). A binary opts in with
//! [`use_jemalloc!`](crate::use_jemalloc); the library and the tests keep the system's.

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's settings (it reads them from the `_rjem_malloc_conf` symbol at start-up;
/// `_RJEM_MALLOC_CONF` in the environment still overrides): two arenas are plenty for a
/// handful of busy threads; a background thread hands freed pages back to the kernel
/// within a quarter second, so RSS follows the load down instead of keeping its peak;
/// and each thread's cache keeps only objects up to 4 KiB, since the larger ones it held
/// (sled's nodes and buffers) were 15 MiB of peak RSS at full load for no CPU saved.
pub const MALLOC_CONF: &[u8; 85] =
    b"narenas:2,background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0,tcache_max:4096\0";

/// Makes jemalloc with [`MALLOC_CONF`] the global allocator of the binary it is used in.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        #[export_name = "_rjem_malloc_conf"]
        static MALLOC_CONF: &[u8; 85] = $crate::allocator::MALLOC_CONF;
    };
}
