#include "tls.h"

#include <stdexcept>
#include <string>

namespace nephra::scp {
namespace {

void check(const OFCondition& cond, const std::string& what) {
  if (cond.bad()) throw std::runtime_error("TLS: " + what + ": " + cond.text());
}

}  // namespace

std::unique_ptr<DcmTLSTransportLayer> make_tls_layer(T_ASC_NetworkRole role, const config::Config::Tls& tls) {
  // OpenSSL seeds itself from the operating system; DCMTK's random-seed file is not needed.
  auto layer = std::make_unique<DcmTLSTransportLayer>(role, nullptr, OFTrue);
  // BCP 195 "non-downgrading": TLS 1.2 or later with forward-secret AEAD suites only (plain BCP 195 still allows
  // TLS 1.0/1.1 and CBC suites for old peers).
  check(layer->setTLSProfile(TSP_Profile_BCP195_ND), "BCP 195 ND profile");
  check(layer->activateCipherSuites(), "cipher suites");
  check(layer->setPrivateKeyFile(tls.private_key.c_str(), DCF_Filetype_PEM),
        "cannot load tls.private_key " + tls.private_key.string());
  check(layer->setCertificateFile(tls.certificate.c_str(), DCF_Filetype_PEM),
        "cannot load tls.certificate " + tls.certificate.string());
  if (!layer->checkPrivateKeyMatchesCertificate()) {
    throw std::runtime_error("TLS: tls.private_key does not belong to tls.certificate");
  }
  check(layer->addTrustedCertificateFile(tls.ca_certificates.c_str(), DCF_Filetype_PEM),
        "cannot load tls.ca_certificates " + tls.ca_certificates.string());
  const bool verify = role == NET_REQUESTOR || tls.require_client_certificate;
  layer->setCertificateVerification(verify ? DCV_requireCertificate : DCV_ignoreCertificate);
  return layer;
}

}  // namespace nephra::scp
