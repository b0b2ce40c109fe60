#include "store_scp.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

namespace nephra::scp {
namespace {

constexpr Uint16 kOutOfResources = 0xA700;
constexpr Uint16 kDataSetMismatch = 0xA900;
constexpr Uint16 kCannotUnderstand = 0xC000;

bool valid_uid(const std::string& uid) {
  return !uid.empty() && uid.size() <= 64 &&
         std::all_of(uid.begin(), uid.end(), [](char c) { return c == '.' || (c >= '0' && c <= '9'); });
}

// Whether `host` (a name or an IPv4 address) resolves to `address`.
bool host_has_address(const std::string& host, const std::string& address) {
  if (host == address) return true;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return false;
  bool match = false;
  for (const addrinfo* a = found; a != nullptr && !match; a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    match = ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr && address == text;
  }
  ::freeaddrinfo(found);
  return match;
}

std::string get_string(DcmDataset& ds, const DcmTagKey& tag) {
  OFString value;
  ds.findAndGetOFStringArray(tag, value);
  return value.c_str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

OFCondition add_storage_contexts(DcmSCPConfig& config) {
  const OFList<OFString> verification{UID_LittleEndianImplicitTransferSyntax, UID_LittleEndianExplicitTransferSyntax};
  OFCondition cond = config.addPresentationContext(UID_VerificationSOPClass, verification);
  // Accepted as sent; decoding is the engine's job. JPEG 2000 is left out on purpose: DCMTK cannot decode
  // it, so a PACS that can transcode will fall back to one of these.
  // Lossless compressed first: a sender proposing one is sending that data, and re-encoding costs both sides.
  // Lossy syntaxes come last so that we never ask for lossy compression of lossless data.
  const OFList<OFString> syntaxes{UID_JPEGLSLosslessTransferSyntax,
                                  UID_JPEGProcess14SV1TransferSyntax,
                                  UID_JPEGProcess14TransferSyntax,
                                  UID_RLELosslessTransferSyntax,
                                  UID_LittleEndianExplicitTransferSyntax,
                                  UID_LittleEndianImplicitTransferSyntax,
                                  UID_DeflatedExplicitVRLittleEndianTransferSyntax,
                                  UID_JPEGLSLossyTransferSyntax,
                                  UID_JPEGProcess1TransferSyntax,
                                  UID_JPEGProcess2_4TransferSyntax};
  for (const char* sop : {UID_CTImageStorage, UID_EnhancedCTImageStorage}) {
    if (cond.good()) cond = config.addPresentationContext(sop, syntaxes);
  }
  return cond;
}

StoreScp::StoreScp(std::shared_ptr<const config::Config> cfg, store::RoundStore& spool, InstanceSink& sink,
                   ScpStats& stats)
    : cfg_(std::move(cfg)), spool_(spool), sink_(sink), stats_(stats) {}

OFBool StoreScp::checkCalledAETitleAccepted(const OFString& calledAE) {
  const bool ok = trim(calledAE.c_str()) == cfg_->node.ae_title;
  if (!ok) stats_.associations_rejected_called_ae.inc();
  if (!ok) spdlog::warn("SCP_ASSOC_REJECTED reason=called_ae_not_recognised called_ae=\"{}\"", calledAE.c_str());
  return ok ? OFTrue : OFFalse;
}

OFBool StoreScp::checkCallingAETitleAccepted(const OFString& callingAE) {
  const config::Peer* peer = cfg_->find_peer(trim(callingAE.c_str()));
  if (peer == nullptr) {
    stats_.associations_rejected_calling_ae.inc();
    spdlog::warn("SCP_ASSOC_REJECTED reason=calling_ae_not_recognised calling_ae=\"{}\" peer={}", callingAE.c_str(),
                 getPeerIP().c_str());
    return OFFalse;
  }
  // An AE title is a name anyone can claim; the address it calls from is harder to fake.
  if (cfg_->node.check_peer_address && !host_has_address(peer->host, getPeerIP().c_str())) {
    stats_.associations_rejected_address.inc();
    spdlog::warn("SCP_ASSOC_REJECTED reason=calling_address_not_allowed calling_ae={} peer={} expected_host={}",
                 peer->ae_title, getPeerIP().c_str(), peer->host);
    return OFFalse;
  }
  return OFTrue;
}

void StoreScp::notifyAssociationAcknowledge() {
  stored_ = 0;
  acknowledged_ = true;
  stats_.associations_accepted.inc();
  spdlog::info("SCP_ASSOC_ACCEPTED calling_ae={} peer={}", getPeerAETitle().c_str(), getPeerIP().c_str());
}

void StoreScp::notifyAssociationTermination() {
  if (!acknowledged_) return;  // refused associations were already logged with their reason
  acknowledged_ = false;
  spdlog::info("SCP_ASSOC_CLOSED calling_ae={} stored={}", getPeerAETitle().c_str(), stored_);
}

void StoreScp::notifyAbortRequest() {
  spdlog::warn("SCP_ASSOC_ABORTED calling_ae={} stored={}", getPeerAETitle().c_str(), stored_);
}

OFCondition StoreScp::handleIncomingCommand(T_DIMSE_Message* incomingMsg, const DcmPresentationContextInfo& presInfo) {
  if (incomingMsg->CommandField != DIMSE_C_STORE_RQ) return DcmThreadSCP::handleIncomingCommand(incomingMsg, presInfo);

  T_DIMSE_C_StoreRQ& req = incomingMsg->msg.CStoreRQ;
  DcmDataset* received = nullptr;
  const OFCondition cond = receiveSTORERequest(req, presInfo.presentationContextID, received);
  const std::unique_ptr<DcmDataset> dataset(received);
  if (cond.bad()) {
    stats_.rejected_unreadable.inc();
    spdlog::warn("CSTORE_REFUSED reason=unreadable_dataset calling_ae={} status=0x{:04X} detail=\"{}\"",
                 getPeerAETitle().c_str(), kCannotUnderstand, cond.text());
    // The association may still be usable (a complete but unparsable data set): answer, and let DCMTK
    // end it if the peer has gone.
    const OFCondition sent = sendSTOREResponse(presInfo.presentationContextID, req, kCannotUnderstand);
    return sent.good() ? EC_Normal : sent;
  }
  const auto started = std::chrono::steady_clock::now();
  const Uint16 status = ingest(req, *dataset);
  stats_.store_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return sendSTOREResponse(presInfo.presentationContextID, req, status);
}

// The checks that come before anything is written; nullopt when the instance may be stored.
std::optional<Uint16> StoreScp::refusal(const T_DIMSE_C_StoreRQ& req, const InstanceInfo& info, double size_mb) {
  if (size_mb > cfg_->node.max_instance_mb) {
    stats_.rejected_too_large.inc();
    spdlog::warn("CSTORE_REFUSED reason=instance_too_large calling_ae={} status=0x{:04X} size_mb={:.1f} max_mb={}",
                 info.calling_ae, kOutOfResources, size_mb, cfg_->node.max_instance_mb);
    return kOutOfResources;
  }
  if (info.sop_class_uid != req.AffectedSOPClassUID || info.sop_instance_uid != req.AffectedSOPInstanceUID) {
    stats_.rejected_uid_mismatch.inc();
    spdlog::warn("CSTORE_REFUSED reason=uid_mismatch calling_ae={} status=0x{:04X}", info.calling_ae, kDataSetMismatch);
    return kDataSetMismatch;
  }
  if (info.study_uid.empty() || info.series_uid.empty() || info.sop_instance_uid.empty()) {
    stats_.rejected_missing_uid.inc();
    spdlog::warn("CSTORE_REFUSED reason=missing_uid calling_ae={} status=0x{:04X}", info.calling_ae, kCannotUnderstand);
    return kCannotUnderstand;
  }
  // They end up in the results we send back: a malformed one would make every SR and SC invalid.
  if (!valid_uid(info.study_uid) || !valid_uid(info.series_uid) || !valid_uid(info.sop_instance_uid)) {
    stats_.rejected_invalid_uid.inc();
    spdlog::warn(R"(CSTORE_REFUSED reason=invalid_uid calling_ae={} status=0x{:04X} note="UIDs are digits and dots, )"
                 R"(at most 64 characters")",
                 info.calling_ae, kCannotUnderstand);
    return kCannotUnderstand;
  }
  const std::uintmax_t free_mb = spool_.free_mb();
  if (free_mb < static_cast<std::uintmax_t>(cfg_->node.min_free_spool_mb)) {
    stats_.rejected_spool_low.inc();
    spdlog::warn("CSTORE_REFUSED reason=spool_low_on_space calling_ae={} status=0x{:04X} free_mb={} min_free_mb={}",
                 info.calling_ae, kOutOfResources, free_mb, cfg_->node.min_free_spool_mb);
    return kOutOfResources;
  }
  return std::nullopt;
}

Uint16 StoreScp::ingest(const T_DIMSE_C_StoreRQ& req, DcmDataset& dataset) {
  InstanceInfo info;
  info.calling_ae = trim(getPeerAETitle().c_str());
  info.sop_class_uid = get_string(dataset, DCM_SOPClassUID);
  info.sop_instance_uid = get_string(dataset, DCM_SOPInstanceUID);
  info.study_uid = get_string(dataset, DCM_StudyInstanceUID);
  info.series_uid = get_string(dataset, DCM_SeriesInstanceUID);
  const E_TransferSyntax xfer = dataset.getOriginalXfer();
  info.transfer_syntax_uid = DcmXfer(xfer).getXferID();
  const double size_mb = static_cast<double>(dataset.getLength(xfer)) / (1024.0 * 1024.0);
  if (const auto status = refusal(req, info, size_mb)) return *status;

  const auto writer = [&](const std::filesystem::path& tmp) -> std::string {
    DcmFileFormat file(&dataset, OFFalse);
    file.getMetaInfo()->putAndInsertString(DCM_SourceApplicationEntityTitle, info.calling_ae.c_str());
    const OFCondition saved = file.saveFile(tmp.c_str(), xfer);
    file.getAndRemoveDataset();  // the dataset is owned by the caller
    return saved.good() ? std::string() : std::string(saved.text());
  };
  try {
    const StoreResult result = spool_.store(info, writer, static_cast<size_t>(cfg_->study.max_instances));
    ++stored_;
    stats_.instances_stored.inc();
    sink_.on_stored(info, result);
    return STATUS_Success;
  } catch (const StudyFullError& err) {
    stats_.rejected_study_full.inc();
    spdlog::warn("CSTORE_REFUSED reason=study_instance_limit calling_ae={} status=0x{:04X} detail=\"{}\"",
                 info.calling_ae, kOutOfResources, err.what());
    return kOutOfResources;
  } catch (const std::exception& err) {
    stats_.rejected_spool_failure.inc();
    spdlog::error("SPOOL_WRITE_FAILED calling_ae={} status=0x{:04X} reason=\"{}\"", info.calling_ae, kOutOfResources,
                  err.what());
    return kOutOfResources;
  }
}

}  // namespace nephra::scp
