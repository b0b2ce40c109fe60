#include <gtest/gtest.h>

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
  EXPECT_EQ(error_key("[node\n"), "(syntax)");
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
