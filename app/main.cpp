// nephrad: the Nephra node. One linear launch: args -> config -> logging -> model -> spool -> stages -> wait.
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string_view>

#include "nephra/config/config.h"
#include "nephra/engine/allocator.h"
#include "node.h"

namespace {

using nephra::app::kBadConfig;
using nephra::app::kOk;
using nephra::app::kUsage;

constexpr std::string_view kUsageText = R"(usage: nephrad --config FILE          run the node in the foreground
       nephrad --check-config FILE    validate FILE and exit (non-zero names the offending key)
       nephrad --print-defaults       print the default configuration
       nephrad --print-reference      print the configuration reference (Markdown)
       nephrad --version
)";

struct Args {
  std::string mode;
  std::string config_path;
};

std::optional<Args> parse_args(int argc, char** argv) {
  if (argc == 2) {
    const std::string_view a = argv[1];
    if (a == "--print-defaults" || a == "--print-reference" || a == "--version") return Args{std::string(a), ""};
  }
  if (argc == 3) {
    const std::string_view a = argv[1];
    if (a == "--config" || a == "--check-config") return Args{std::string(a), argv[2]};
  }
  return std::nullopt;
}

std::optional<nephra::config::Config> load_config(const std::string& path) {
  try {
    return nephra::config::load_file(path);
  } catch (const nephra::config::ConfigError& err) {
    std::cerr << "nephrad: invalid configuration " << path << ": " << err.what() << "\n";
    return std::nullopt;
  }
}

}  // namespace

int main(int argc, char** argv) {
  nephra::engine::tune_allocator_for_images();
  // Outgoing DCMTK connections read this when they open a socket; incoming ones are set by the listener.
  ::setenv("TCP_NODELAY", "1", 1);
  const auto args = parse_args(argc, argv);
  if (!args) {
    std::cerr << kUsageText;
    return kUsage;
  }
  if (args->mode == "--version") {
    std::cout << "nephrad " << NEPHRA_VERSION << "\n";
    return kOk;
  }
  if (args->mode == "--print-defaults") {
    std::cout << nephra::config::default_toml();
    return kOk;
  }
  if (args->mode == "--print-reference") {
    std::cout << nephra::config::reference_markdown();
    return kOk;
  }
  const auto cfg = load_config(args->config_path);
  if (!cfg) return kBadConfig;
  if (args->mode == "--check-config") {
    std::cout << "nephrad: " << args->config_path << " is valid\n";
    return kOk;
  }
  return nephra::app::run_node(*cfg, args->config_path, NEPHRA_VERSION);
}
