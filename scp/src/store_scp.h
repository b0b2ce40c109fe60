#pragma once
// One association's worker: a DCMTK thread SCP that hands each received instance to the spool.
#include <dcmtk/dcmnet/scpthrd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "nephra/config/config.h"
#include "nephra/scp/storage_server.h"

namespace nephra::scp {

class StoreScp : public DcmThreadSCP {
 public:
  // `cfg` is the configuration as it was when the association arrived; a reload applies to the next one.
  StoreScp(std::shared_ptr<const config::Config> cfg, store::RoundStore& spool, InstanceSink& sink, ScpStats& stats);
  // Serves one association to its end (DcmThreadSCP::run), keeping it at hand for streaming receives.
  OFCondition serve(T_ASC_Association* assoc);
  // A slot a crash left holding data (RoundStore::recover_filled_slots): stored as its receive would have stored
  // it, or removed when it is not a whole instance (then it was never acknowledged). True when stored.
  bool recover(const std::filesystem::path& slot);

 protected:
  OFCondition handleIncomingCommand(T_DIMSE_Message* incomingMsg, const DcmPresentationContextInfo& presInfo) override;
  OFBool checkCalledAETitleAccepted(const OFString& calledAE) override;
  OFBool checkCallingAETitleAccepted(const OFString& callingAE) override;
  void notifyAssociationAcknowledge() override;
  void notifyAssociationTermination() override;
  void notifyAbortRequest() override;

 private:
  std::shared_ptr<const config::Config> cfg_;
  store::RoundStore& spool_;
  InstanceSink& sink_;
  ScpStats& stats_;
  T_ASC_Association* assoc_ = nullptr;
  unsigned stored_ = 0;
  bool acknowledged_ = false;

  // A data set received into its spool file, and what the receive already knew about it.
  struct Received {
    std::string calling_ae;
    std::filesystem::path file;
    std::uintmax_t data_set_offset = 0;  // where the data set starts, after the meta header
    std::string transfer_syntax_uid;
    std::uintmax_t cap = 0;  // node.max_instance_mb in bytes, as the receive applied it
    store::Written written = store::Written::kSyncedSlot;
    // Makes the data durable ("" once they are, or why not), called once the instance passed its checks; when
    // empty, the store syncs the file itself (`written` is kRecoveredSlot).
    std::function<std::string()> sync;
  };

  OFCondition receive_store(T_DIMSE_C_StoreRQ& req, const DcmPresentationContextInfo& presInfo);
  Uint16 ingest(const T_DIMSE_C_StoreRQ& req, const Received& in);
  Uint16 store_checked(const InstanceInfo& info, const Received& in);
  std::optional<Uint16> refusal(const T_DIMSE_C_StoreRQ& req, const InstanceInfo& info, double size_mb);
  Uint16 too_large(const std::string& calling_ae, const char* what, double size_mb);
};

// Presentation contexts we accept: verification, and CT storage in the syntaxes the engine decodes.
OFCondition add_storage_contexts(DcmSCPConfig& config);

}  // namespace nephra::scp
