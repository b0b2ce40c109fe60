#include "node_metrics.h"

#include <filesystem>

namespace nephra::app {
namespace {

template <typename T>
std::function<double()> read(const std::atomic<T>& value) {
  return [&value] { return static_cast<double>(value.load()); };
}

void register_scp(metrics::Registry& r, const scp::ScpStats& s) {
  r.add("nephra_instances_received_total", "CT instances acknowledged after they were spooled durably.",
        s.instances_stored);
  const std::string rejected = "nephra_instances_rejected_total";
  const std::string rejected_help = "C-STORE requests answered with a failure status, by reason.";
  r.add(rejected, rejected_help, s.rejected_unreadable, {{"reason", "unreadable_dataset"}});
  r.add(rejected, rejected_help, s.rejected_uid_mismatch, {{"reason", "uid_mismatch"}});
  r.add(rejected, rejected_help, s.rejected_missing_uid, {{"reason", "missing_uid"}});
  r.add(rejected, rejected_help, s.rejected_invalid_uid, {{"reason", "invalid_uid"}});
  r.add(rejected, rejected_help, s.rejected_spool_low, {{"reason", "spool_low_on_space"}});
  r.add(rejected, rejected_help, s.rejected_too_large, {{"reason", "instance_too_large"}});
  r.add(rejected, rejected_help, s.rejected_study_full, {{"reason", "study_instance_limit"}});
  r.add(rejected, rejected_help, s.rejected_spool_failure, {{"reason", "spool_write_failed"}});
  const std::string assoc = "nephra_associations_total";
  const std::string assoc_help = "Incoming associations, by outcome.";
  r.add(assoc, assoc_help, s.associations_accepted, {{"result", "accepted"}});
  r.add(assoc, assoc_help, s.associations_rejected_called_ae, {{"result", "rejected_called_ae"}});
  r.add(assoc, assoc_help, s.associations_rejected_calling_ae, {{"result", "rejected_calling_ae"}});
  r.add(assoc, assoc_help, s.associations_rejected_address, {{"result", "rejected_address"}});
  r.add(assoc, assoc_help, s.associations_rejected_certificate, {{"result", "rejected_certificate"}});
  r.add(assoc, assoc_help, s.associations_rejected_limit, {{"result", "rejected_limit"}});
  r.add(assoc, assoc_help, s.associations_rejected_spool_low, {{"result", "rejected_spool_low"}});
  r.add(assoc, assoc_help, s.associations_failed, {{"result", "failed"}});
  r.add(assoc, assoc_help, s.associations_aborted_at_shutdown, {{"result", "aborted_at_shutdown"}});
  r.add(assoc, assoc_help, s.associations_setup_timeout, {{"result", "setup_timeout"}});
  r.add(assoc, assoc_help, s.associations_refused_waiting, {{"result", "refused_waiting"}});
  r.add(assoc, assoc_help, s.connections_closed_early, {{"result", "closed_before_request"}});
  r.add("nephra_accept_errors_total", "accept() failures for lack of descriptors or memory.", s.accept_errors);
  r.add_gauge("nephra_connections_waiting", "Connections accepted whose association request is not complete yet.",
              read(s.connections_waiting));
  r.add_gauge("nephra_associations_active", "Associations in progress.", read(s.associations_active));
}

void register_pipeline(metrics::Registry& r, const pipeline::PipelineStats& s, const pipeline::ClassifyStats& c) {
  r.add_counter("nephra_studies_completed_total", "Study rounds sealed after their quiet period.",
                read(s.studies_completed));
  r.add_counter("nephra_late_instances_total", "Instances that arrived after their study was sealed.",
                read(s.late_instances));
  r.add_counter("nephra_jobs_total", "Study jobs finished, by result.", read(s.jobs_done), {{"result", "done"}});
  r.add_counter("nephra_jobs_total", "Study jobs finished, by result.", read(s.jobs_retried), {{"result", "retry"}});
  r.add_counter("nephra_jobs_total", "Study jobs finished, by result.", read(s.jobs_quarantined),
                {{"result", "quarantined"}});
  r.add_counter("nephra_jobs_total", "Study jobs finished, by result.", read(s.rounds_superseded),
                {{"result", "superseded"}});
  r.add_gauge("nephra_rounds_quarantined", "Study rounds given up on, kept with their reason for an operator.",
              read(s.quarantined));
  r.add_counter("nephra_duplicate_instances_total",
                "Re-sent instances the study already held (acknowledged, nothing redone).", read(s.duplicates_ignored));
  const std::string removed = "nephra_retention_removed_total";
  const std::string removed_help = "What the retention policy removed: CT of done studies, or whole done studies.";
  r.add_counter(removed, removed_help, read(s.retention_instance_folders), {{"what", "instances"}});
  r.add_counter(removed, removed_help, read(s.retention_studies), {{"what", "studies"}});
  r.add_counter("nephra_retention_removed_bytes_total", "Bytes the retention policy removed.", read(s.retention_bytes));
  r.add_gauge("nephra_queue_depth", "Sealed study rounds waiting for a worker.", read(s.queue_depth));
  r.add_gauge("nephra_jobs_running", "Study jobs in progress.", read(s.jobs_running));
  r.add("nephra_slices_classified_total", "Slices the engine classified.", c.slices_classified);
  r.add("nephra_slices_not_assessed_total",
        "Classified slices marked not assessed (out of distribution, or an axial cut through the lungs).",
        c.slices_not_assessed);
  r.add("nephra_slices_unreadable_total", "Slices that could not be decoded for classification.", c.slices_unreadable);
}

void register_delivery(metrics::Registry& r, const pipeline::DeliveryStats& s) {
  r.add_counter("nephra_results_sent_total", "Result instances (SR, SC) the archive acknowledged.",
                read(s.instances_sent));
  r.add_counter("nephra_results_delivered_total", "Study rounds whose results were all delivered.",
                read(s.rounds_delivered));
  r.add_counter("nephra_results_retries_total", "Failed delivery attempts that will be retried.", read(s.retries));
  r.add_counter("nephra_results_dead_lettered_total", "Study rounds whose results went to the dead-letter folder.",
                read(s.dead_lettered));
  r.add_counter("nephra_results_shadowed_total", "Study rounds classified in shadow mode: results kept, not sent.",
                read(s.rounds_shadowed));
  r.add_gauge("nephra_results_pending", "Study rounds whose results wait for delivery.", read(s.pending));
  r.add_gauge("nephra_results_retrying", "Pending deliveries that failed at least once.", read(s.retrying));
}

void register_latency(metrics::Registry& r, const NodeParts& p) {
  const std::string name = "nephra_stage_duration_seconds";
  const std::string help = "Time spent per stage: store (one instance), queue_wait, each study step, send.";
  r.add(name, help, p.server.stats().store_seconds, {{"stage", "store"}});
  r.add(name, help, p.pipeline.stats().queue_wait_seconds, {{"stage", "queue_wait"}});
  for (const auto& [step, histogram] : p.pipeline.stats().step_seconds)
    r.add(name, help, *histogram, {{"stage", step}});
  r.add(name, help, p.outbox.stats().send_seconds, {{"stage", "send"}});
}

}  // namespace

void register_node_metrics(metrics::Registry& registry, const NodeParts& parts) {
  register_scp(registry, parts.server.stats());
  register_pipeline(registry, parts.pipeline.stats(), parts.classify);
  register_delivery(registry, parts.outbox.stats());
  register_latency(registry, parts);
  const std::filesystem::path root = parts.spool.root();
  registry.add_gauge("nephra_spool_free_bytes", "Space available to the node on the spool's file system.", [root] {
    std::error_code ec;
    const auto space = std::filesystem::space(root, ec);
    return ec ? -1.0 : static_cast<double>(space.available);
  });
}

}  // namespace nephra::app
