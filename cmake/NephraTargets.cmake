# Per-target build settings for Nephra's own code (third-party headers stay warning-free via SYSTEM).
function(nephra_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion
                                           -Wshadow -Wnon-virtual-dtor -Wold-style-cast)
  if(NEPHRA_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

if(NEPHRA_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

option(NEPHRA_SANITIZE_THREAD "Build with ThreadSanitizer" OFF)
if(NEPHRA_SANITIZE_THREAD)
  # Boost.Asio uses std::atomic_thread_fence, which TSan does not model (GCC warns with -Wtsan); a race that this
  # hides would still show as a report.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
endif()
