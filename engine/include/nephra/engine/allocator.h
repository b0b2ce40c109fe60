#pragma once
// Process-wide malloc policy for programs that decode CT slices; call once at the start of main().
#include <malloc.h>

namespace nephra::engine {

// Decoding and preprocessing a slice allocates and frees buffers of 0.5-2 MB. Above glibc's dynamic mmap threshold
// each one is a fresh mmap whose pages fault in on first touch and are unmapped on free: on a 2-core machine that
// was a third of a study's classification time. Keep such buffers on the heap and keep up to 64 MB of freed memory
// for the next slice instead of handing it back to the kernel at once (bench/README.md: 134 slices 2.8-3.0 s ->
// 2.0-2.2 s, peak RSS +30 MB).
inline void tune_allocator_for_images() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

}  // namespace nephra::engine
