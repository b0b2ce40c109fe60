#pragma once
// Process-wide malloc policy for programs that decode CT slices; call once at the start of main(), before any thread.
#include <malloc.h>

#include <cstdlib>

namespace nephra::engine {

// At most this many glibc arenas (its default is 8 per core). Each arena keeps up to M_TRIM_THRESHOLD of freed
// memory, and every concurrent association and worker thread can get an arena of its own: under eight archives at
// once (bench/load.sh) the node's RSS doubled without a leak. See bench/README.md, *Many senders at once*.
inline constexpr int kMallocArenas = 2;

// Decoding and preprocessing a slice allocates and frees buffers of 0.5-2 MB. Above glibc's dynamic mmap threshold
// each one is a fresh mmap whose pages fault in on first touch and are unmapped on free: on a 2-core machine that
// was a third of a study's classification time. Keep such buffers on the heap and keep up to 64 MB of freed memory
// for the next slice instead of handing it back to the kernel at once (bench/README.md: 134 slices 2.8-3.0 s ->
// 2.0-2.2 s, peak RSS +30 MB).
inline void tune_allocator_for_images() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // An operator's MALLOC_ARENA_MAX (e.g. the unit's Environment=) wins over the built-in cap; an arena_max given
  // through GLIBC_TUNABLES does not (mallopt runs after it).
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, kMallocArenas);
}

}  // namespace nephra::engine
