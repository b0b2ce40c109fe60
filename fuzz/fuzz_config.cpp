// libFuzzer harness: bytes → nephra::config::load_string (toml++ parser, then the schema-driven validator).
// ConfigError is the documented outcome for anything invalid; any other exception or a sanitizer report is a
// finding. A configuration that loads must survive what the node does with it next: a reload against itself
// and against the defaults.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>
#include <vector>

#include "nephra/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const nephra::config::Config cfg = nephra::config::load_string(text, "fuzz.toml");
    std::vector<std::string> restart;
    (void)nephra::config::apply_reload(cfg, cfg, restart);
    (void)nephra::config::apply_reload(nephra::config::Config{}, cfg, restart);
    for (const auto& peer : cfg.peers) (void)cfg.find_peer(peer.ae_title);
  } catch (const nephra::config::ConfigError&) {
    // documented: the key and line are named, the node refuses to start (or keeps the running config on reload)
  } catch (const std::exception& err) {
    std::fprintf(stderr, "undocumented exception from load_string: %s: %s\n", typeid(err).name(), err.what());
    std::abort();
  }
  return 0;
}
