#pragma once
// DICOM TLS (PS3.15 Annex B, BCP 195 profile) transport layers, configured from [tls], for both directions.
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmtls/tlslayer.h>
#include <dcmtk/dcmtls/tlstrans.h>

#include <memory>
#include <string>

#include "nephra/config/config.h"

namespace nephra::scp {

// Loads the node's certificate and key and the trusted authorities; throws std::runtime_error naming the file
// or the mismatch. As acceptor, callers without a trusted certificate fail the handshake when
// tls.require_client_certificate is set; as requestor, the archive's certificate is always verified.
std::unique_ptr<DcmTLSTransportLayer> make_tls_layer(T_ASC_NetworkRole role, const config::Config::Tls& tls);

// The acceptor's layer. The association gate runs each caller's handshake itself, many at once and each under the
// setup deadline, on an SSL made from this layer's context; the finished SSL is handed over here just before DCMTK
// reads the association request, and the connection DCMTK then creates on that socket adopts it (its "server side
// handshake" finds the handshake done) instead of starting a new one on DCMTK's single setup thread.
class AcceptorTlsLayer : public DcmTLSTransportLayer {
 public:
  explicit AcceptorTlsLayer(const config::Config::Tls& tls);
  AcceptorTlsLayer(const AcceptorTlsLayer&) = delete;
  AcceptorTlsLayer& operator=(const AcceptorTlsLayer&) = delete;
  ~AcceptorTlsLayer() override { take_back(); }
  [[nodiscard]] SSL_CTX* context() { return getNativeHandle(); }
  // Only the thread that calls ASC_receiveAssociation uses these, one connection at a time.
  void hand_over(int fd, SSL* ssl);
  void take_back();  // frees the handed-over SSL unless DCMTK adopted it
  DcmTransportConnection* createConnection(DcmNativeSocketType openSocket, OFBool useSecureLayer) override;

 private:
  int handed_fd_ = -1;
  SSL* handed_ = nullptr;
};

// Whether the certificate the peer of `assoc` presented (over TLS) carries `name`, a DNS name or an IPv4 address,
// as OpenSSL checks it; false without TLS or without a certificate.
bool certificate_names(T_ASC_Association* assoc, const std::string& name);

}  // namespace nephra::scp
