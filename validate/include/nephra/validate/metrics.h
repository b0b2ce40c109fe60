#pragma once
// What `nephra validate` measures, per study as the SR speaks: per finding, study sensitivity and the false-finding
// rate on normal studies, with bootstrap intervals over studies; "not assessed" rates; the same per stratum of the
// DICOM headers (scanner, kernel, contrast, slice thickness); and the study score's reliability.
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nephra::validate {

// One labelled study as the node's study rule judged it.
struct StudyOutcome {
  std::string study;
  std::map<std::string, bool> truth;               // per finding, from the labels
  std::map<std::string, bool> called;              // per finding, the study rule's call (what the SR says)
  std::map<std::string, double> score;             // per finding, the highest calibrated slice probability (Finding)
  std::map<std::string, bool> on_labelled_slices;  // per called finding with labelled slices: a run overlaps them
  int slices = 0;
  int not_assessed = 0;
  int unreadable = 0;
  std::map<std::string, std::string> strata;  // e.g. "scanner" → "SIEMENS SOMATOM Force"
  [[nodiscard]] bool normal() const;
  [[nodiscard]] bool any_called() const;
};

struct Rate {
  int k = 0;       // events
  int n = 0;       // out of
  double low = 0;  // 95 % bootstrap interval over studies (percentiles)
  double high = 0;
  [[nodiscard]] double value() const { return n == 0 ? 0.0 : static_cast<double>(k) / n; }
};

struct FindingMetrics {
  std::string finding;
  Rate sensitivity;       // labelled studies where it is called
  Rate false_finding;     // normal studies where it is called
  Rate called_on_others;  // studies labelled with another finding only, where it is called
  Rate located;           // called on a study with labelled slices: a run overlaps them
};

struct Stratum {
  std::string key;     // e.g. "scanner"
  std::string value;   // e.g. "SIEMENS SOMATOM Force"
  Rate sensitivity;    // labelled findings found, over (study, finding) pairs
  Rate false_finding;  // normal studies with any finding called
  Rate not_assessed;   // slices
};

struct ReliabilityBin {
  double low = 0, high = 0;  // study score range
  int studies = 0;
  int with_finding = 0;
  double mean_score = 0;
};

struct Metrics {
  int studies = 0;
  int normal_studies = 0;
  std::vector<FindingMetrics> findings;
  Rate any_false_finding;  // normal studies with any finding called
  Rate not_assessed;       // slices, over all studies
  std::vector<Stratum> strata;
  std::vector<ReliabilityBin> reliability;  // (study, finding) pairs, 10 bins of the study score
  int bootstrap = 0;
};

// `bootstrap` resamples of the studies (with replacement, a fixed seed: the same input gives the same report).
Metrics compute_metrics(const std::vector<StudyOutcome>& outcomes, const std::vector<std::string>& findings,
                        int bootstrap = 2000, unsigned seed = 20261202);

nlohmann::json to_json(const Metrics& m);
nlohmann::json to_json(const Rate& r);

}  // namespace nephra::validate
