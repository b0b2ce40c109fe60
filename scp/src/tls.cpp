#include "tls.h"

#include <arpa/inet.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmtls/tlstrans.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace nephra::scp {
namespace {

void check(const OFCondition& cond, const std::string& what) {
  if (cond.bad()) throw std::runtime_error("TLS: " + what + ": " + cond.text());
}

void configure(DcmTLSTransportLayer& layer, T_ASC_NetworkRole role, const config::Config::Tls& tls) {
  // BCP 195 "non-downgrading": TLS 1.2 or later with forward-secret AEAD suites only (plain BCP 195 still allows
  // TLS 1.0/1.1 and CBC suites for old peers).
  check(layer.setTLSProfile(TSP_Profile_BCP195_ND), "BCP 195 ND profile");
  check(layer.activateCipherSuites(), "cipher suites");
  check(layer.setPrivateKeyFile(tls.private_key.c_str(), DCF_Filetype_PEM),
        "cannot load tls.private_key " + tls.private_key.string());
  check(layer.setCertificateFile(tls.certificate.c_str(), DCF_Filetype_PEM),
        "cannot load tls.certificate " + tls.certificate.string());
  if (!layer.checkPrivateKeyMatchesCertificate()) {
    throw std::runtime_error("TLS: tls.private_key does not belong to tls.certificate");
  }
  check(layer.addTrustedCertificateFile(tls.ca_certificates.c_str(), DCF_Filetype_PEM),
        "cannot load tls.ca_certificates " + tls.ca_certificates.string());
  const bool verify = role == NET_REQUESTOR || tls.require_client_certificate;
  layer.setCertificateVerification(verify ? DCV_requireCertificate : DCV_ignoreCertificate);
}

}  // namespace

std::unique_ptr<DcmTLSTransportLayer> make_tls_layer(T_ASC_NetworkRole role, const config::Config::Tls& tls) {
  // OpenSSL seeds itself from the operating system; DCMTK's random-seed file is not needed.
  auto layer = std::make_unique<DcmTLSTransportLayer>(role, nullptr, OFTrue);
  configure(*layer, role, tls);
  return layer;
}

AcceptorTlsLayer::AcceptorTlsLayer(const config::Config::Tls& tls)
    : DcmTLSTransportLayer(NET_ACCEPTOR, nullptr, OFTrue) {
  configure(*this, NET_ACCEPTOR, tls);
}

void AcceptorTlsLayer::hand_over(int fd, SSL* ssl) {
  take_back();
  handed_fd_ = fd;
  handed_ = ssl;
}

void AcceptorTlsLayer::take_back() {
  if (handed_ != nullptr) SSL_free(handed_);
  handed_ = nullptr;
  handed_fd_ = -1;
}

DcmTransportConnection* AcceptorTlsLayer::createConnection(DcmNativeSocketType openSocket, OFBool useSecureLayer) {
  if (useSecureLayer && handed_ != nullptr && openSocket == handed_fd_) {
    SSL* ssl = handed_;
    handed_ = nullptr;
    handed_fd_ = -1;
    return new DcmTLSConnection(openSocket, ssl);  // NOLINT(cppcoreguidelines-owning-memory): DCMTK owns it
  }
  return DcmTLSTransportLayer::createConnection(openSocket, useSecureLayer);
}

bool certificate_names(T_ASC_Association* assoc, const std::string& name) {
  DcmTransportConnection* conn = DUL_getTransportConnection(assoc->DULassociation);
  const unsigned long len = conn == nullptr ? 0 : conn->getPeerCertificateLength();
  if (len == 0) return false;
  std::vector<unsigned char> der(len);
  if (conn->getPeerCertificate(der.data(), len) != len) return false;
  const unsigned char* p = der.data();
  const std::unique_ptr<X509, decltype(&X509_free)> cert(d2i_X509(nullptr, &p, static_cast<long>(len)), X509_free);
  if (!cert) return false;
  in_addr ip{};
  if (::inet_pton(AF_INET, name.c_str(), &ip) == 1) return X509_check_ip_asc(cert.get(), name.c_str(), 0) == 1;
  return X509_check_host(cert.get(), name.c_str(), name.size(), 0, nullptr) == 1;
}

}  // namespace nephra::scp
