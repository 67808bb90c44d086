//! An SSTable hit through `Engine::get_with` performs no heap allocation: counted with a
//! global allocator that counts per thread (the engine's background threads do not count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bftd::storage::{Engine, EngineOptions, WriteBatch};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread local,
// which needs no allocation.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn sstable_hit_and_miss_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        caller_pins_wal: false,
        ..EngineOptions::default()
    };
    let engine = Engine::open(dir.path(), options, |_, _, _| Ok(())).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..1000u32 {
        batch.put(i.to_be_bytes().to_vec(), vec![i as u8; 100]);
    }
    engine.write(&batch).unwrap();
    engine.flush().unwrap();
    assert_eq!(engine.table_count(), 1);
    let before = allocations();
    let mut found_bytes = 0;
    for i in 0..2000u32 {
        found_bytes += engine.get_with(&i.to_be_bytes(), |value| value.map_or(0, <[u8]>::len));
    }
    assert_eq!(allocations() - before, 0, "lookups allocated");
    assert_eq!(found_bytes, 1000 * 100);
}
