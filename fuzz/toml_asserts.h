#pragma once
// Force-included into the fuzz build of the config sources (see CMakeLists.txt): toml++ without its debug
// precondition asserts, as Debian's gcc-built libtomlplusplus runs in the node.
#define TOML_ASSERT(expr) static_cast<void>(0)
