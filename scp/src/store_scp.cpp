#include "store_scp.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>

namespace nephra::scp {
namespace {

constexpr Uint16 kOutOfResources = 0xA700;
constexpr Uint16 kDataSetMismatch = 0xA900;
constexpr Uint16 kCannotUnderstand = 0xC000;

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

StoreScp::StoreScp(std::shared_ptr<const config::Config> cfg, Spool& spool, InstanceSink& sink, ScpStats& stats)
    : cfg_(std::move(cfg)), spool_(spool), sink_(sink), stats_(stats) {}

OFBool StoreScp::checkCalledAETitleAccepted(const OFString& calledAE) {
  const bool ok = trim(calledAE.c_str()) == cfg_->node.ae_title;
  if (!ok) stats_.associations_rejected_called_ae.inc();
  if (!ok) spdlog::warn("SCP_ASSOC_REJECTED reason=called_ae_not_recognised called_ae=\"{}\"", calledAE.c_str());
  return ok ? OFTrue : OFFalse;
}

OFBool StoreScp::checkCallingAETitleAccepted(const OFString& callingAE) {
  const bool ok = cfg_->find_peer(trim(callingAE.c_str())) != nullptr;
  if (!ok) {
    stats_.associations_rejected_calling_ae.inc();
    spdlog::warn("SCP_ASSOC_REJECTED reason=calling_ae_not_recognised calling_ae=\"{}\" peer={}", callingAE.c_str(),
                 getPeerIP().c_str());
  }
  return ok ? OFTrue : OFFalse;
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

Uint16 StoreScp::ingest(const T_DIMSE_C_StoreRQ& req, DcmDataset& dataset) {
  InstanceInfo info;
  info.calling_ae = trim(getPeerAETitle().c_str());
  info.sop_class_uid = get_string(dataset, DCM_SOPClassUID);
  info.sop_instance_uid = get_string(dataset, DCM_SOPInstanceUID);
  info.study_uid = get_string(dataset, DCM_StudyInstanceUID);
  info.series_uid = get_string(dataset, DCM_SeriesInstanceUID);
  const E_TransferSyntax xfer = dataset.getOriginalXfer();
  info.transfer_syntax_uid = DcmXfer(xfer).getXferID();

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

  const auto writer = [&](const std::filesystem::path& tmp) -> std::string {
    DcmFileFormat file(&dataset, OFFalse);
    file.getMetaInfo()->putAndInsertString(DCM_SourceApplicationEntityTitle, info.calling_ae.c_str());
    const OFCondition saved = file.saveFile(tmp.c_str(), xfer);
    file.getAndRemoveDataset();  // the dataset is owned by the caller
    return saved.good() ? std::string() : std::string(saved.text());
  };
  try {
    const StoreResult result = spool_.store(info, writer);
    ++stored_;
    stats_.instances_stored.inc();
    sink_.on_stored(info, result);
    return STATUS_Success;
  } catch (const std::exception& err) {
    stats_.rejected_spool_failure.inc();
    spdlog::error("SPOOL_WRITE_FAILED calling_ae={} status=0x{:04X} reason=\"{}\"", info.calling_ae, kOutOfResources,
                  err.what());
    return kOutOfResources;
  }
}

}  // namespace nephra::scp
