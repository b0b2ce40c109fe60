#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "nephra/config/config.h"
#include "process.h"

using nephra::config::ConfigError;
using nephra::config::load_string;

namespace {

std::string error_key(const std::string& toml) {
  try {
    load_string(toml);
  } catch (const ConfigError& err) {
    return err.key();
  }
  return "(accepted)";
}

}  // namespace

TEST(Config, ShippedDefaultsParse) {
  const auto cfg = load_string(nephra::config::default_toml());
  EXPECT_EQ(cfg.node.ae_title, "NEPHRA");
  EXPECT_EQ(cfg.node.bind, "127.0.0.1");
  EXPECT_EQ(cfg.node.port, 11112);
  EXPECT_EQ(cfg.node.max_associations, 16);
  EXPECT_DOUBLE_EQ(cfg.study.stable_seconds, 10.0);
  ASSERT_EQ(cfg.peers.size(), 1U);
  EXPECT_EQ(cfg.peers[0].ae_title, "ORTHANC");
  EXPECT_EQ(cfg.peers[0].port, 4242);
  EXPECT_NE(cfg.find_peer("ORTHANC"), nullptr);
  EXPECT_EQ(cfg.find_peer("NOBODY"), nullptr);
}

TEST(Config, ShippedFileIsValid) {
  const auto cfg = nephra::config::load_file(std::string(NEPHRA_SOURCE_DIR) + "/config/nephra.toml");
  EXPECT_EQ(cfg.node.ae_title, "NEPHRA");
}

TEST(Config, ErrorsNameTheOffendingKey) {
  EXPECT_EQ(error_key("[node]\nprot = 1\n"), "node.prot");
  EXPECT_EQ(error_key("[nodes]\n"), "nodes");
  EXPECT_EQ(error_key("[node]\nport = \"11112\"\n"), "node.port");
  EXPECT_EQ(error_key("[node]\nport = 70000\n"), "node.port");
  EXPECT_EQ(error_key("[node]\nae_title = \"A_VERY_LONG_AE_TITLE\"\n"), "node.ae_title");
  EXPECT_EQ(error_key("[node]\nbind = \"localhost:1\"\n"), "node.bind");
  EXPECT_EQ(error_key("[study]\nstable_seconds = 0\n"), "study.stable_seconds");
  EXPECT_EQ(error_key("[[peers]]\nae_title = \"X\"\nhost = \"h\"\n"), "peers[0].port");
  EXPECT_EQ(error_key("[[peers]]\nae_title = \"X\"\nhost = \"h\"\nport = 1\nextra = 2\n"), "peers[0].extra");
  EXPECT_EQ(error_key("[[peers]]\nae_title=\"X\"\nhost=\"h\"\nport=1\n[[peers]]\nae_title=\"X\"\nhost=\"h\"\nport=2\n"),
            "peers[1].ae_title");
  EXPECT_EQ(error_key("[log]\nlevel = \"loud\"\n"), "log.level");
  EXPECT_EQ(error_key("[log]\ntarget = \"syslog\"\n"), "log.target");
  EXPECT_EQ(error_key("[tls]\nenabled = true\n"), "tls.certificate");
  EXPECT_EQ(error_key("[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\n[[peers]]\nae_title = \"X\"\nhost = \"h\"\n"
                      "port = 1\ntls = true\n"),
            "tls.ca_certificates");
  EXPECT_EQ(error_key("[http]\nbind = \"::1\"\n"), "http.bind");
  EXPECT_EQ(error_key("[node\n"), "(syntax)");
}

// The validator takes its key list and ranges from the schema: every row is checked the same way.
TEST(Config, EverySchemaKeyRejectsAWrongTypeAndAnOutOfRangeValue) {
  for (const auto& row : nephra::config::schema()) {
    const bool peer = row.key.starts_with("peers[].");
    const std::string name = row.key.substr(row.key.rfind('.') + 1);
    const std::string section = peer ? "" : row.key.substr(0, row.key.find('.'));
    const std::string shown = peer ? "peers[0]." + name : row.key;
    const auto toml_with = [&](const std::string& value) {
      std::string t = peer ? "[[peers]]\n" : "[" + section + "]\n";
      for (const std::string k : {"ae_title", "host", "port"}) {
        if (peer && name != k) t.append(k).append(k == "port" ? " = 104\n" : " = \"X\"\n");
      }
      return t.append(name).append(" = ").append(value).append("\n");
    };
    const std::string wrong_type = row.type == "string" ? "1" : "\"text\"";
    EXPECT_EQ(error_key(toml_with(wrong_type)), shown) << row.key;
    if (row.type == "integer" || row.type == "number") {
      EXPECT_EQ(error_key(toml_with(std::to_string(static_cast<long>(row.max) + 1))), shown) << row.key;
      EXPECT_EQ(error_key(toml_with(std::to_string(static_cast<long>(row.min) - 1))), shown) << row.key;
    }
  }
}

TEST(Config, DefaultsOfTheStructTheSchemaAndThePrintedFileAgree) {
  const auto printed = load_string(nephra::config::default_toml());
  const nephra::config::Config built;
  EXPECT_EQ(printed.http.port, built.http.port);
  EXPECT_EQ(printed.http.enabled, built.http.enabled);
  EXPECT_EQ(printed.log.dcmtk_level, built.log.dcmtk_level);
  EXPECT_EQ(printed.log.target, built.log.target);
  EXPECT_DOUBLE_EQ(printed.pipeline.stall_seconds, built.pipeline.stall_seconds);
  EXPECT_DOUBLE_EQ(printed.node.shutdown_grace_seconds, built.node.shutdown_grace_seconds);
  EXPECT_EQ(nephra::config::key_info("http.port").default_value, std::to_string(built.http.port));
  EXPECT_EQ(nephra::config::key_info("node.port").default_value, std::to_string(built.node.port));
}

TEST(Config, ReloadAppliesLiveKeysAndKeepsRestartOnlyOnes) {
  const auto running = load_string("[node]\nport = 11112\n[study]\nstable_seconds = 10\n[http]\nport = 8080\n");
  auto next = load_string(
      "[node]\nport = 104\n[study]\nstable_seconds = 3\n[http]\nport = 9090\n"
      "[[peers]]\nae_title = \"NEW\"\nhost = \"h\"\nport = 1\n");
  std::vector<std::string> needs_restart;
  const auto applied = nephra::config::apply_reload(running, next, needs_restart);
  EXPECT_EQ(applied.node.port, 11112);
  EXPECT_EQ(applied.http.port, 8080);
  EXPECT_DOUBLE_EQ(applied.study.stable_seconds, 3.0);
  EXPECT_NE(applied.find_peer("NEW"), nullptr);
  EXPECT_EQ(needs_restart, (std::vector<std::string>{"node.port", "http.port"}));
  for (const auto& key : needs_restart) EXPECT_FALSE(nephra::config::key_info(key).live) << key;
}

TEST(Config, ErrorMessageCarriesLine) {
  try {
    load_string("[node]\nport = 1\nbogus = 2\n");
    FAIL() << "accepted an unknown key";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("line 3"), std::string::npos) << err.what();
  }
}

TEST(Config, ReferenceListsEverySchemaKey) {
  const std::string ref = nephra::config::reference_markdown();
  for (const auto& row : nephra::config::schema()) EXPECT_NE(ref.find("`" + row.key + "`"), std::string::npos);
}

TEST(Config, ReadmeReferenceMatchesSchema) {
  const std::string readme = nephra::test::read_file(std::string(NEPHRA_SOURCE_DIR) + "/README.md");
  EXPECT_NE(readme.find(nephra::config::reference_markdown()), std::string::npos)
      << "README.md's configuration reference is stale: paste the output of `nephrad --print-reference`";
}

// toml++ 3.3.0 reaches __builtin_unreachable() on some non-ASCII bytes (fuzz/README.md): only comments take them.
TEST(Config, NonAsciiOutsideCommentsIsASyntaxErrorWithItsLine) {
  // The last three in strings are shapes where toml++ 3.3.0 itself would ask whether the character is whitespace.
  const std::vector<std::pair<std::string, int>> cases = {{"\xC2\xA1", 1},
                                                          {"[node]\nport = 1\xC2\xA0\n", 2},
                                                          {"[node]\nae_title = \"A\" \xE3\x80\x80 # x\n", 2},
                                                          {"# one\n\n[node]\nport = 1\xC2\xA0\n", 4},
                                                          {"[node]\nspool_dir = 'sp\xC3\xB6ol'\n", 2},
                                                          {"[node]\nspool_dir = \"\xC2\xA1\"\n", 2},
                                                          {"[node]\nspool_dir = \"\"\"a\\\xC2\xA1\"\"\"\n", 2},
                                                          {"[node]\nspool_dir = \"\"\"a\\\n \xC2\xA1\"\"\"\n", 3},
                                                          {"[node]\nport = 1'\xC2\xA1'\n", 2}};
  for (const auto& [text, line] : cases) {
    try {
      load_string(text);
      ADD_FAILURE() << "accepted " << text;
    } catch (const ConfigError& err) {
      EXPECT_EQ(err.key(), "(syntax)");
      EXPECT_NE(std::string(err.what()).find("non-ASCII"), std::string::npos) << err.what();
      EXPECT_NE(std::string(err.what()).find("line " + std::to_string(line)), std::string::npos) << err.what();
    }
  }
  try {
    load_string("[node]\nspool_dir = \"sp\xC3\xB6ol\"\n");
    ADD_FAILURE() << "accepted a non-ASCII string";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("\\uXXXX escape"), std::string::npos) << err.what();
  }
}

TEST(Config, NonAsciiInCommentsIsAcceptedAndStringsCarryItAsEscapes) {
  EXPECT_EQ(error_key("# Universit\xC3\xA4tsspital, Z\xC3\xBCrich\n"
                      "[node]\n"
                      "spool_dir = \"spool \\\" # \" # caf\xC3\xA9 \"\n"
                      "[tls]\n"
                      "certificate = '''\n/etc/nephra/ # '''  # '''\xC3\xA9\n"
                      "private_key = \"\"\"key\"\"\"\"\" #\xC3\xA9\n"),
            "(accepted)");
  const auto cfg = load_string("[node]\nspool_dir = \"sp\\u00F6ol\" # sp\xC3\xB6ol\n");
  EXPECT_EQ(cfg.node.spool_dir, "sp\xC3\xB6ol");
}

TEST(Config, UidRootWithALeadingZeroComponentIsRefused) {
  EXPECT_TRUE(nephra::config::is_uid_prefix("1.2.826.0.1.3680043.10.1234"));
  for (const char* bad : {"1.02", "01.2", "1..2", ".1", "1.", "1.2a", ""}) {
    EXPECT_FALSE(nephra::config::is_uid_prefix(bad)) << bad;
    EXPECT_THROW(load_string(std::string("[results]\nuid_root = \"") + bad + "\"\n"), nephra::config::ConfigError)
        << bad;
  }
}

TEST(Config, EveryKeyOfTheSchemaHasAFieldSoTheReloadPolicyIsTheSchemasLiveFlag) {
  for (const auto& row : nephra::config::schema()) {
    if (row.key.rfind("peers[]", 0) == 0) continue;  // peers are reloaded as a whole, always live
    EXPECT_TRUE(nephra::config::has_field(row.key)) << row.key;
  }
}
