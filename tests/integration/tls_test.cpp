// DICOM TLS both ways, with certificates made here by openssl: DCMTK's storescu sends over TLS, the node sends its
// results to a TLS-only storescp, and callers without a trusted certificate are turned away.
#include <gtest/gtest.h>
#include <csignal>

#include "node.h"
#include "orthanc.h"

namespace fs = std::filesystem;
using nephra::test::NodeOptions;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

void openssl(const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (nephra::test::run(argv, dir / "openssl.log") != 0) {
    throw std::runtime_error("openssl failed: " + nephra::test::read_file(dir / "openssl.log"));
  }
}

// A certificate for `name` signed by the test authority (or self-signed when `ca` is empty).
void make_certificate(const fs::path& dir, const std::string& name, const std::string& ca) {
  const std::string key = (dir / (name + ".key")).string();
  const std::string crt = (dir / (name + ".crt")).string();
  if (ca.empty()) {
    openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj",
             "/CN=" + name},
            dir);
    return;
  }
  const std::string csr = (dir / (name + ".csr")).string();
  openssl({"req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + name}, dir);
  openssl({"x509", "-req", "-in", csr, "-CA", (dir / (ca + ".crt")).string(), "-CAkey", (dir / (ca + ".key")).string(),
           "-CAcreateserial", "-out", crt, "-days", "2"},
          dir);
}

std::string pem(const fs::path& dir, const std::string& name, const char* ext) { return (dir / (name + ext)).string(); }

// A test authority "ca" and a certificate it signs for each of `names`, in <dir>/pki.
fs::path make_pki(const fs::path& dir, std::initializer_list<const char*> names) {
  fs::path pki = dir / "pki";
  fs::create_directories(pki);
  make_certificate(pki, "ca", "");
  for (const char* name : names) make_certificate(pki, name, "ca");
  return pki;
}

// The node's [tls] table: its certificate "nephra" and the authority "ca" from `pki`.
std::string node_tls_toml(const fs::path& pki) {
  return "[tls]\nenabled = true\ncertificate = \"" + pem(pki, "nephra", ".crt") + "\"\nprivate_key = \"" +
         pem(pki, "nephra", ".key") + "\"\nca_certificates = \"" + pem(pki, "ca", ".crt") + "\"\n";
}

// DCMTK's storescp as a TLS-only archive (AE STORESCU) presenting the certificate `name` from `pki`; files go to
// `received`, its log beside it.
nephra::test::Process tls_archive(const fs::path& pki, const std::string& name, const fs::path& received, int port) {
  fs::create_directories(received);
  return nephra::test::Process(
      {"storescp", "+tls", pem(pki, name, ".key"), pem(pki, name, ".crt"), "+cf", pem(pki, "ca", ".crt"), "-od",
       received.string(), "-aet", "STORESCU", std::to_string(port)},
      received.parent_path() / "storescp.log");
}

// A node whose one peer STORESCU sends over TLS and gets its results at `archive_port`, certificate "archive".
NodeOptions tls_sender_options(const fs::path& pki, int archive_port) {
  NodeOptions options;
  options.stable_seconds = 0.5;
  options.peers = {"STORESCU"};
  options.peer_ports = {{"STORESCU", archive_port}};
  options.extra_toml = node_tls_toml(pki);
  options.peer_tls = {"STORESCU"};
  options.peer_tls_names = {{"STORESCU", "archive"}};
  return options;
}

size_t files_in(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) n += e.is_regular_file() ? 1U : 0U;
  return n;
}

}  // namespace

TEST(Tls, StudiesArriveAndResultsLeaveOverTlsAndUntrustedCallersAreRefused) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
  TempDir tmp;
  const fs::path pki = make_pki(tmp.path(), {"nephra", "archive"});
  make_certificate(pki, "stranger", "");  // not signed by the authority

  const fs::path received = tmp.path() / "received";
  const int archive_port = nephra::test::free_port();
  nephra::test::Process archive = tls_archive(pki, "archive", received, archive_port);
  TestNode node(tmp.path(), tls_sender_options(pki, archive_port));
  node.start();
  EXPECT_NE(node.log().find("tls=true"), std::string::npos);

  const std::string fixture = (nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices").string();
  EXPECT_NE(node.storescu("STORESCU", {fixture}, "plain.log"), 0) << "a plain association must not get through";
  EXPECT_NE(node.storescu(
                "STORESCU", {fixture}, "stranger.log",
                {"+tls", pem(pki, "stranger", ".key"), pem(pki, "stranger", ".crt"), "+cf", pem(pki, "ca", ".crt")}),
            0)
      << "a certificate from no trusted authority must not get through";
  EXPECT_NE(node.storescu("STORESCU", {fixture}, "anonymous.log", {"+tla", "+cf", pem(pki, "ca", ".crt")}), 0)
      << "a caller without a certificate must not get through";
  EXPECT_EQ(node.open_instances(), 0U);

  ASSERT_EQ(
      node.storescu("STORESCU", {fixture}, "tls.log",
                    {"+tls", pem(pki, "archive", ".key"), pem(pki, "archive", ".crt"), "+cf", pem(pki, "ca", ".crt")}),
      0)
      << nephra::test::read_file(tmp.path() / "tls.log");
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_DELIVERED") != std::string::npos; },
                                       std::chrono::seconds(60)))
      << node.log();
  EXPECT_GE(files_in(received), 1U) << "the SR (and any heatmaps) arrive at the TLS-only archive";
  node.stop();
  archive.signal(SIGTERM);
  archive.wait();
}

// Orthanc (1.9+ speaks DICOM TLS) as the hospital PACS: it routes the study to the node over TLS, and the node's
// results go back to it over TLS.
TEST(Tls, OrthancRoutesAStudyOverTlsAndGetsTheResultsBackOverTls) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
  TempDir tmp;
  const fs::path pki = make_pki(tmp.path(), {"nephra", "orthanc"});

  const int pacs_port = nephra::test::free_port();
  NodeOptions options;
  options.stable_seconds = 1;
  options.peers = {"ORTHANC"};
  options.peer_ports = {{"ORTHANC", pacs_port}};
  options.peer_tls = {"ORTHANC"};
  options.peer_tls_names = {{"ORTHANC", "orthanc"}};
  options.extra_toml = node_tls_toml(pki);
  TestNode node(tmp.path(), options);
  const nlohmann::json tls = {
      {"DicomTlsEnabled", true},
      {"DicomTlsCertificate", pem(pki, "orthanc", ".crt")},
      {"DicomTlsPrivateKey", pem(pki, "orthanc", ".key")},
      {"DicomTlsTrustedCertificates", pem(pki, "ca", ".crt")},
      {"DicomTlsRemoteCertificateRequired", true},
      {"DicomModalities",
       {{"nephra", {{"AET", "NEPHRA"}, {"Host", "127.0.0.1"}, {"Port", node.port()}, {"UseDicomTls", true}}}}}};
  nephra::test::TestOrthanc pacs(tmp.path(), node.port(), pacs_port, tls);
  pacs.start();
  node.start();

  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices")) {
    if (e.path().extension() == ".dcm") files.push_back(e.path());
  }
  pacs.upload(files);
  const std::string study = pacs.get("/studies")[0];
  pacs.post("/modalities/nephra/store", nlohmann::json({{"Resources", {study}}, {"Synchronous", true}}).dump());
  ASSERT_TRUE(nephra::test::wait_until(
      [&] {
        for (const auto& s : pacs.series_of(study)) {
          if (s.modality == "SR") return true;
        }
        return false;
      },
      std::chrono::seconds(60)))
      << node.log();
  EXPECT_NE(node.log().find("SCP_ASSOC_ACCEPTED calling_ae=ORTHANC"), std::string::npos);
  node.stop();
  pacs.stop();
}

// Three callers stall mid-handshake (a real ClientHello, then nothing) while a trusted archive echoes three times:
// every echo completes while the stallers still wait, and the stallers are cut at the setup deadline.
TEST(Tls, HandshakesThatStallAreCutAtTheSetupDeadlineAndHoldUpNobody) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
  TempDir tmp;
  const fs::path pki = make_pki(tmp.path(), {"nephra", "archive"});
  NodeOptions options;
  options.node_toml = "association_setup_seconds = 20\n";
  options.extra_toml = node_tls_toml(pki);
  TestNode node(tmp.path(), options);
  node.start();
  std::vector<nephra::test::Process> stallers;
  for (int i = 0; i < 3; ++i) {
    stallers.emplace_back(
        std::vector<std::string>{"/usr/bin/python3", (nephra::test::source_dir() / "tests/tools/raw_scu.py").string(),
                                 "127.0.0.1", std::to_string(node.port()), "STALL", "NEPHRA", "tls-stall"},
        tmp.path() / ("stall" + std::to_string(i) + ".txt"));
  }
  ASSERT_TRUE(nephra::test::wait_until(
      [&] { return node.http_get("/metrics").find("nephra_connections_waiting 3") != std::string::npos; },
      std::chrono::seconds(10)))
      << "the three stallers wait in the gate";
  for (int i = 0; i < 3; ++i) {
    const fs::path log = tmp.path() / ("echoscu" + std::to_string(i) + ".log");
    const int echo = nephra::test::run(
        {"echoscu", "+tls", pem(pki, "archive", ".key"), pem(pki, "archive", ".crt"), "+cf", pem(pki, "ca", ".crt"),
         "-aet", "STORESCU", "-aec", "NEPHRA", "127.0.0.1", std::to_string(node.port())},
        log);
    EXPECT_EQ(echo, 0) << nephra::test::read_file(log);
  }
  EXPECT_EQ(node.log().find("SCP_ASSOC_SETUP_TIMEOUT"), std::string::npos)
      << "the echoes went through while every staller was still waiting";
  for (size_t i = 0; i < stallers.size(); ++i) {
    EXPECT_EQ(stallers[i].wait(), 0);
    EXPECT_NE(nephra::test::read_file(tmp.path() / ("stall" + std::to_string(i) + ".txt")).find("closed"),
              std::string::npos);
  }
  EXPECT_NE(node.log().find("SCP_ASSOC_SETUP_TIMEOUT peer=127.0.0.1 seconds=20 stage=tls"), std::string::npos)
      << node.log();
  node.stop();
}

// An archive whose certificate comes from the trusted authority but names somebody else (here the node's own) gets
// no results: the delivery waits, saying why, and nothing reaches it.
TEST(Tls, ResultsGoOnlyToACertificateThatNamesTheArchive) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
  TempDir tmp;
  const fs::path pki = make_pki(tmp.path(), {"nephra", "archive"});
  const fs::path received = tmp.path() / "received";
  const int archive_port = nephra::test::free_port();
  nephra::test::Process impostor = tls_archive(pki, "nephra", received, archive_port);  // the node's own certificate
  TestNode node(tmp.path(), tls_sender_options(pki, archive_port));
  node.start();
  const std::string fixture = (nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices").string();
  ASSERT_EQ(
      node.storescu("STORESCU", {fixture}, "tls.log",
                    {"+tls", pem(pki, "archive", ".key"), pem(pki, "archive", ".crt"), "+cf", pem(pki, "ca", ".crt")}),
      0);
  EXPECT_TRUE(nephra::test::wait_until(
      [&] { return node.log().find("does not name archive (peers[].tls_name)") != std::string::npos; },
      std::chrono::seconds(60)))
      << node.log();
  EXPECT_EQ(files_in(received), 0U);
  node.stop();
  impostor.signal(SIGTERM);
  impostor.wait();
}

// tls.bind_calling_ae: a certificate from the hospital's authority is not enough to send as STORESCU; it must name
// STORESCU's archive (its tls_name). Off, any trusted certificate may (applied at reload).
TEST(Tls, WithTheBindingOnlyTheArchivesOwnCertificateMaySendAsItsAeTitle) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
  TempDir tmp;
  const fs::path pki = make_pki(tmp.path(), {"nephra", "archive", "other"});
  NodeOptions options = tls_sender_options(pki, nephra::test::free_port());
  options.extra_toml += "bind_calling_ae = true\n";
  TestNode node(tmp.path(), options);
  node.start();
  const std::string fixture = (nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices").string();
  const auto send_with = [&](const std::string& name) {
    return node.storescu("STORESCU", {fixture}, name + ".log",
                         {"+tls", pem(pki, name, ".key"), pem(pki, name, ".crt"), "+cf", pem(pki, "ca", ".crt")});
  };
  EXPECT_NE(send_with("other"), 0) << "trusted, but not the archive's certificate";
  EXPECT_NE(node.log().find("reason=certificate_does_not_name_peer calling_ae=STORESCU peer=127.0.0.1 "
                            "expected_name=archive"),
            std::string::npos)
      << node.log();
  EXPECT_NE(node.http_get("/metrics").find(R"(nephra_associations_total{result="rejected_certificate"} 1)"),
            std::string::npos);
  EXPECT_EQ(node.open_instances(), 0U);
  EXPECT_EQ(send_with("archive"), 0) << nephra::test::read_file(tmp.path() / "archive.log");

  options.extra_toml = node_tls_toml(pki);  // the binding off again
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("CONFIG_RELOADED") != std::string::npos; },
                                       std::chrono::seconds(10)));
  EXPECT_EQ(send_with("other"), 0) << "without the binding any certificate from the authority may send";
  node.stop();
}

// The non-downgrading profile, seen from outside: TLS 1.1 and CBC suites fail the handshake, TLS 1.2 with an
// ECDHE AEAD suite succeeds.
TEST(Tls, OnlyTls12OrLaterWithForwardSecretAeadSuitesIsNegotiated) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
  TempDir tmp;
  const fs::path pki = make_pki(tmp.path(), {"nephra", "archive"});
  NodeOptions options;
  options.extra_toml = node_tls_toml(pki);
  TestNode node(tmp.path(), options);
  node.start();
  const auto handshake = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {"openssl",  "s_client",
                                     "-connect", "127.0.0.1:" + std::to_string(node.port()),
                                     "-cert",    pem(pki, "archive", ".crt"),
                                     "-key",     pem(pki, "archive", ".key"),
                                     "-CAfile",  pem(pki, "ca", ".crt")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return nephra::test::run(argv, tmp.path() / "s_client.log");
  };
  EXPECT_NE(handshake({"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"}), 0) << "TLS 1.1";
  EXPECT_NE(handshake({"-tls1_2", "-cipher", "AES256-SHA:@SECLEVEL=0"}), 0) << "a CBC suite without forward secrecy";
  EXPECT_NE(handshake({"-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"}), 0) << "a CBC suite";
  EXPECT_EQ(handshake({"-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"}), 0)
      << nephra::test::read_file(tmp.path() / "s_client.log");
  node.stop();
}
