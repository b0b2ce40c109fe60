#pragma once
// The catalogue of /metrics: every series the node exports, named once, with its help text.
#include "nephra/metrics/metrics.h"
#include "nephra/pipeline/outbox.h"
#include "nephra/pipeline/pipeline.h"
#include "nephra/scp/storage_server.h"

namespace nephra::app {

struct NodeParts {
  const scp::StorageServer& server;
  const pipeline::Pipeline& pipeline;
  const pipeline::ClassifyStats& classify;
  const pipeline::Outbox& outbox;
  const store::RoundStore& spool;
};

void register_node_metrics(metrics::Registry& registry, const NodeParts& parts);

}  // namespace nephra::app
