#pragma once
// DICOM TLS (PS3.15 Annex B, BCP 195 profile) transport layers, configured from [tls], for both directions.
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmtls/tlslayer.h>

#include <memory>
#include <string>

#include "nephra/config/config.h"

namespace nephra::scp {

// Loads the node's certificate and key and the trusted authorities; throws std::runtime_error naming the file
// or the mismatch. As acceptor, callers without a trusted certificate fail the handshake when
// tls.require_client_certificate is set; as requestor, the archive's certificate is always verified.
std::unique_ptr<DcmTLSTransportLayer> make_tls_layer(T_ASC_NetworkRole role, const config::Config::Tls& tls);

// Whether the certificate the peer of `assoc` presented (over TLS) carries `name`, a DNS name or an IPv4 address,
// as OpenSSL checks it; false without TLS or without a certificate.
bool certificate_names(T_ASC_Association* assoc, const std::string& name);

}  // namespace nephra::scp
