#include "nephra/validate/run.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <algorithm>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "nephra/engine/study.h"
#include "nephra/store/round_store.h"
#include "nephra/validate/labels.h"

namespace nephra::validate {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr Uint32 kMaxHeaderElement = 4096;  // strata come from the header: pixel data is not read

struct Case {
  StudyLabel label;
  json results;     // the study result as the node writes it (results.json)
  fs::path header;  // a DICOM file of the study, for the strata; empty when there is none
  std::string error;
};

struct Wrong {
  std::string study;
  std::string finding;
  std::string kind;  // "missed" or "false finding"
  double score = 0;
  int slice = 0;
  std::string image;  // relative to the report folder; empty when the slice could not be read again
};

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string header_string(DcmDataset& ds, const DcmTagKey& tag) {
  OFString value;
  return ds.findAndGetOFStringArray(tag, value).good() ? std::string(value.c_str()) : std::string();
}

std::map<std::string, std::string> strata_of(const fs::path& dicom) {
  if (dicom.empty()) return {{"scanner", "image files (no DICOM header)"}};
  DcmFileFormat file;
  if (file.loadFile(dicom.c_str(), EXS_Unknown, EGL_noChange, kMaxHeaderElement).bad()) {
    return {{"scanner", "unknown (header unreadable)"}};
  }
  DcmDataset& ds = *file.getDataset();
  const auto or_unknown = [](const std::string& s) { return s.empty() ? std::string("not recorded") : s; };
  std::string scanner = header_string(ds, DCM_Manufacturer);
  const std::string model = header_string(ds, DCM_ManufacturerModelName);
  if (!model.empty()) scanner += (scanner.empty() ? "" : " ") + model;
  std::string thickness = "not recorded";
  if (const std::string t = header_string(ds, DCM_SliceThickness); !t.empty()) {
    const double mm = std::atof(t.c_str());
    thickness = mm <= 1.5 ? "up to 1.5 mm" : mm <= 3.0 ? "1.5 to 3 mm" : mm <= 5.0 ? "3 to 5 mm" : "over 5 mm";
  }
  return {{"scanner", or_unknown(scanner)},
          {"kernel", or_unknown(header_string(ds, DCM_ConvolutionKernel))},
          {"contrast", header_string(ds, DCM_ContrastBolusAgent).empty() ? "no contrast agent recorded"
                                                                         : "contrast agent recorded"},
          {"slice thickness", thickness}};
}

StudyOutcome outcome_of(const Case& c, const std::vector<std::string>& findings) {
  StudyOutcome o;
  o.study = c.label.study;
  o.truth = c.label.present;
  for (const auto& f : c.results.value("findings", json::array())) {
    const std::string name = f.value("class", "");
    if (std::find(findings.begin(), findings.end(), name) == findings.end()) continue;
    const bool called = f.value("present", false);
    o.called[name] = called;
    o.score[name] = f.value("max_probability", 0.0);
    const auto where = c.label.where.find(name);
    if (!called || where == c.label.where.end()) continue;
    bool overlap = false;
    for (const auto& run : f.value("runs", json::array())) {
      for (const auto& r : where->second) overlap = overlap || (run[0] <= r.last && run[1] >= r.first);
    }
    o.on_labelled_slices[name] = overlap;
  }
  o.not_assessed = c.results.value("not_assessed", 0);
  o.slices = c.results.value("assessed", 0) + o.not_assessed;
  o.unreadable = c.results.value("unreadable", 0);
  o.strata = strata_of(c.header);
  return o;
}

void progress_bar(std::ostream& os, size_t done, size_t total, const std::string& what) {
  constexpr size_t kWidth = 30;
  const size_t filled = total == 0 ? kWidth : done * kWidth / total;
  os << "\rvalidate [" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] " << done << "/" << total
     << " " << what.substr(0, 40) << std::string(40 - std::min<size_t>(40, what.size()), ' ') << std::flush;
  if (done == total) os << "\n";
}

Case judge_folder(const StudyLabel& label, const fs::path& base, engine::Classifier& clf) {
  Case c{label, {}, {}, {}};
  const fs::path dir = fs::path(label.study).is_absolute() ? fs::path(label.study) : base / label.study;
  if (!fs::is_directory(dir)) {
    c.error = "no folder " + dir.string();
    return c;
  }
  const auto files = files_under(dir);
  for (const auto& f : files) {
    if (engine::is_dicom_file(f)) {
      c.header = f;
      break;
    }
  }
  std::vector<engine::FileError> errors;
  const auto study = engine::classify_files(files, clf, errors);
  if (study.slices.empty()) {
    c.error = "no slice could be read in " + dir.string();
    return c;
  }
  c.results = json::parse(engine::study_json(study, clf.model()));
  return c;
}

Case judge_spool(const StudyLabel& label, const fs::path& spool) {
  Case c{label, {}, {}, {}};
  const auto round = store::newest_round_with(spool, label.study, "results.json");
  if (!round) {
    c.error = "no results for Study Instance UID " + label.study + " in " + spool.string();
    return c;
  }
  std::ifstream in(*round / "results.json");
  c.results = json::parse(in, nullptr, false);
  if (!c.results.is_object()) {
    c.error = "unreadable " + (*round / "results.json").string();
    return c;
  }
  for (const auto& s : c.results.value("slices", json::array())) {
    const fs::path file = s.value("file", "");
    if (!file.empty() && fs::exists(file)) {
      c.header = file;
      break;
    }
  }
  return c;
}

// The slice behind a wrong call, with the finding's heatmap (classified again: CAMs are not kept).
std::string draw_wrong(const Case& c, const std::string& finding, int slice, engine::Classifier& clf,
                       const fs::path& out, size_t number) {
  for (const auto& s : c.results.value("slices", json::array())) {
    if (s.value("slice", 0) != slice) continue;
    try {
      engine::SliceSource source;
      source.path = s.value("file", "");
      source.frame = s.value("frame", 0);
      const auto loaded = engine::reload_slice(source, clf.model());
      const auto result = clf.classify(std::vector<engine::Slice>{loaded});
      if (result.empty() || result[0].cams.empty()) return "";
      const std::string name = "wrong/" + std::to_string(number) + "-" + finding + ".png";
      fs::create_directories(out / "wrong");
      const cv::Mat img = engine::overlay(loaded, engine::heatmap(loaded, result[0], clf.model().class_index(finding)));
      return cv::imwrite((out / name).string(), img) ? name : "";
    } catch (const std::exception&) {
      return "";  // the file is gone (spool retention) or changed
    }
  }
  return "";
}

void draw_reliability(const Metrics& m, const fs::path& file) {
  constexpr int kSize = 420, kMargin = 50, kPlot = kSize - 2 * kMargin;
  cv::Mat img(kSize, kSize, CV_8UC3, cv::Scalar(255, 255, 255));
  const auto at = [&](double x, double y) {
    return cv::Point(kMargin + static_cast<int>(x * kPlot), kSize - kMargin - static_cast<int>(y * kPlot));
  };
  cv::rectangle(img, at(0, 0), at(1, 1), cv::Scalar(120, 120, 120));
  cv::line(img, at(0, 0), at(1, 1), cv::Scalar(190, 190, 190), 1, cv::LINE_AA);
  int most = 1;
  for (const auto& b : m.reliability) most = std::max(most, b.studies);
  cv::Point last(-1, -1);
  for (const auto& b : m.reliability) {
    if (b.studies == 0) continue;
    const cv::Point p = at(b.mean_score, static_cast<double>(b.with_finding) / b.studies);
    if (last.x >= 0) cv::line(img, last, p, cv::Scalar(200, 120, 30), 2, cv::LINE_AA);
    cv::circle(img, p, 3 + 9 * b.studies / most, cv::Scalar(200, 120, 30), cv::FILLED, cv::LINE_AA);
    last = p;
  }
  const auto text = [&](const std::string& t, cv::Point p) {
    cv::putText(img, t, p, cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(40, 40, 40), 1, cv::LINE_AA);
  };
  text("study score (highest calibrated slice probability)", {kMargin - 10, kSize - 15});
  text("0", at(0, 0) + cv::Point(-4, 18));
  text("1", at(1, 0) + cv::Point(-4, 18));
  text("share of studies with the finding", {10, 25});
  cv::imwrite(file.string(), img);
}

std::string esc(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::string pct(const Rate& r) {
  if (r.n == 0) return "<span class=muted>no study</span>";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%d/%d = %.2f (%.2f&ndash;%.2f)", r.k, r.n, r.value(), r.low, r.high);
  return buf;
}

std::string card_value(const json& card, const char* table, const std::string& finding) {
  const auto t = card.find(table);
  if (t == card.end() || !t->contains(finding)) return "<span class=muted>&ndash;</span>";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.2f", (*t)[finding].get<double>());
  return buf;
}

void write_head(std::ostream& html, const ValidateOptions& o, const engine::Model& model, const Metrics& m) {
  html << R"(<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Nephra validation report</title>
<style>body{font:14px/1.45 system-ui,sans-serif;margin:24px;max-width:1100px;color:#1d2430}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border-bottom:1px solid #dde;padding:4px 8px;text-align:left;
vertical-align:top}th{color:#555}.muted{color:#777}.bad{color:#b00020}img.hm{width:220px}</style></head><body>
<h1>Nephra validation report</h1>
<p>Model <b>)"
       << esc(model.id()) << "</b> (onnx sha256 " << esc(model.onnx_sha256.substr(0, 16)) << "&hellip;), labels <code>"
       << esc(o.labels.filename().string()) << "</code>, " << m.studies << " studies (" << m.normal_studies
       << " labelled normal), "
       << (o.spool ? "results the node kept in its spool (shadow mode)" : "classified by this run") << ". "
       << "Intervals: 95 % bootstrap over studies (" << m.bootstrap
       << " resamples). Research prototype, not for diagnosis.</p>\n";
}

void write_findings(std::ostream& html, const engine::Model& model, const Metrics& m, const json& card) {
  html << "<h2>What a finding in the SR is worth on these studies</h2>\n<table><tr><th>finding</th><th>study "
          "sensitivity</th><th>false finding on normal studies</th><th>called on studies of another finding</th>"
          "<th>run on the labelled slices</th><th>model card (out of fold): sensitivity / false finding</th></tr>\n";
  for (const auto& f : m.findings) {
    html << "<tr><td>" << esc(f.finding) << "</td><td>" << pct(f.sensitivity) << "</td><td>" << pct(f.false_finding)
         << "</td><td>" << pct(f.called_on_others) << "</td><td>" << pct(f.located) << "</td><td>"
         << card_value(card, "sensitivity", f.finding) << " / "
         << card_value(card, "false_finding_rate_normal", f.finding) << "</td></tr>\n";
  }
  html << "<tr><td>any finding</td><td></td><td>" << pct(m.any_false_finding) << "</td><td></td><td></td><td>"
       << "&ndash; / " << card_value(card, "false_finding_rate_normal", "any") << "</td></tr></table>\n";
  html << "<p>Slices not assessed (out of distribution or outside the abdomen): " << pct(m.not_assessed)
       << ". A study's finding is what the SR would say: the model's study rule (";
  std::string rule;
  for (const auto& f : model.decision_thresholds) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s p &ge; %.2f on &ge; %d adjacent slices", f.first.c_str(), f.second,
                  model.min_run_for(f.first));
    rule += (rule.empty() ? "" : "; ") + std::string(buf);
  }
  html << rule << ").</p>\n";
}

void write_strata(std::ostream& html, const Metrics& m) {
  html << "<h2>By scanner, kernel, contrast and slice thickness (from the DICOM headers)</h2>\n"
       << "<table><tr><th>stratum</th><th>value</th><th>labelled findings found</th><th>false finding on normal "
          "studies</th><th>slices not assessed</th></tr>\n";
  for (const auto& s : m.strata) {
    html << "<tr><td>" << esc(s.key) << "</td><td>" << esc(s.value) << "</td><td>" << pct(s.sensitivity) << "</td><td>"
         << pct(s.false_finding) << "</td><td>" << pct(s.not_assessed) << "</td></tr>\n";
  }
  html << "</table>\n<h2>Study score reliability</h2>\n<p><img src=\"reliability.png\" alt=\"reliability plot\"> "
          "Each point: the (study, finding) pairs whose study score (the highest calibrated slice probability) falls "
          "in a tenth of the range, against the share of them labelled with the finding; point size = pairs. The "
          "study score is not a probability that the study has the finding: a well-behaved model rises from "
          "bottom left to top right.</p>\n";
}

void write_wrong(std::ostream& html, const std::vector<Wrong>& wrong) {
  html << "<h2>Studies it got wrong</h2>\n";
  if (wrong.empty()) html << "<p>None.</p>\n";
  html << "<table>";
  for (const auto& w : wrong) {
    char score[16];
    std::snprintf(score, sizeof score, "%.2f", w.score);
    html << "<tr><td>" << esc(w.study) << "</td><td class=bad>" << esc(w.kind) << ": " << esc(w.finding)
         << "</td><td>study score " << score << ", slice " << w.slice << "</td><td>"
         << (w.image.empty() ? "<span class=muted>slice no longer readable</span>"
                             : R"(<img class=hm src=")" + esc(w.image) + R"(" alt="heatmap">)")
         << "</td></tr>\n";
  }
  html << "</table>\n";
}

void write_studies(std::ostream& html, const std::vector<Case>& cases, const std::vector<StudyOutcome>& outcomes) {
  html << "<h2>Every study</h2>\n<table><tr><th>study</th><th>labelled</th><th>called (study score)</th>"
          "<th>slices</th><th>not assessed</th><th>note</th></tr>\n";
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& study = outcomes[i];
    std::string labelled, called;
    for (const auto& [f, t] : study.truth) labelled += t ? f + " " : "";
    for (const auto& [f, s] : study.score) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "%s%s %.2f ", study.called.at(f) ? "<b>" : "", f.c_str(), s);
      called += buf + std::string(study.called.at(f) ? "</b>" : "");
    }
    html << "<tr><td>" << esc(study.study) << "</td><td>" << (labelled.empty() ? "normal" : esc(labelled))
         << "</td><td>" << called << "</td><td>" << study.slices << "</td><td>" << study.not_assessed
         << "</td><td class=bad>" << esc(cases[i].error) << "</td></tr>\n";
  }
  html << "</table>\n";
}

void write_html(const fs::path& out, const ValidateOptions& o, const engine::Model& model, const Metrics& m,
                const std::vector<Case>& cases, const std::vector<StudyOutcome>& outcomes,
                const std::vector<Wrong>& wrong, const json& card) {
  std::ofstream html(out / "report.html");
  write_head(html, o, model, m);
  write_findings(html, model, m, card);
  write_strata(html, m);
  write_wrong(html, wrong);
  write_studies(html, cases, outcomes);
  html << "</body></html>\n";
}

std::vector<Case> judge_all(const ValidateOptions& o, const std::vector<StudyLabel>& labels, engine::Classifier& clf,
                            std::ostream& progress) {
  std::vector<Case> cases;
  for (size_t i = 0; i < labels.size(); ++i) {
    progress_bar(progress, i, labels.size(), labels[i].study);
    cases.push_back(o.spool ? judge_spool(labels[i], *o.spool) : judge_folder(labels[i], o.labels.parent_path(), clf));
  }
  progress_bar(progress, labels.size(), labels.size(), "done");
  return cases;
}

std::vector<Wrong> wrong_calls(const ValidateOptions& o, const std::vector<Case>& judged,
                               const std::vector<StudyOutcome>& outcomes, engine::Classifier& clf) {
  std::vector<Wrong> wrong;
  for (size_t i = 0; i < judged.size(); ++i) {
    for (const auto& f : judged[i].results.value("findings", json::array())) {
      const std::string name = f.value("class", "");
      if (outcomes[i].truth.count(name) == 0) continue;
      const bool truth = outcomes[i].truth.at(name);
      if (truth == f.value("present", false)) continue;
      Wrong w{outcomes[i].study,        name, truth ? "missed" : "false finding", f.value("max_probability", 0.0),
              f.value("peak_slice", 0), ""};
      if (wrong.size() < static_cast<size_t>(o.max_heatmaps)) {
        w.image = draw_wrong(judged[i], name, w.slice, clf, o.out, wrong.size() + 1);
      }
      wrong.push_back(w);
    }
  }
  return wrong;
}

json card_of(const fs::path& manifest_path) {
  std::ifstream in(manifest_path);
  if (!in) return json::object();
  const auto manifest = json::parse(in, nullptr, false);
  if (!manifest.is_object()) return json::object();
  return manifest.value("metrics", json::object()).value("study_out_of_fold", json::object());
}

json report_json(const ValidateOptions& o, const engine::Model& model, const Metrics& metrics,
                 const std::vector<Case>& cases, const std::vector<StudyOutcome>& outcomes, const json& card) {
  json report = to_json(metrics);
  report["model"] = model.id();
  report["onnx_sha256"] = model.onnx_sha256;
  report["source"] = o.spool ? "spool" : "folders";
  report["model_card_out_of_fold"] = card;
  json studies = json::array();
  for (const auto& s : outcomes) {
    studies.push_back({{"study", s.study},
                       {"labelled", s.truth},
                       {"called", s.called},
                       {"score", s.score},
                       {"slices", s.slices},
                       {"not_assessed", s.not_assessed},
                       {"strata", s.strata}});
  }
  report["per_study"] = studies;
  json errors = json::array();
  for (const auto& c : cases) {
    if (!c.error.empty()) errors.push_back({{"study", c.label.study}, {"line", c.label.line}, {"error", c.error}});
  }
  report["left_out"] = errors;
  return report;
}

}  // namespace

Metrics run_validation(const ValidateOptions& o, engine::Classifier& clf, std::ostream& progress) {
  const auto& model = clf.model();
  std::vector<std::string> findings;
  for (const auto& [name, threshold] : model.decision_thresholds) findings.push_back(name);
  const auto labels = read_labels(o.labels, findings);
  fs::create_directories(o.out);

  const std::vector<Case> cases = judge_all(o, labels, clf, progress);
  std::vector<StudyOutcome> outcomes;
  std::vector<Case> judged;
  for (const auto& c : cases) {
    if (!c.error.empty()) {
      progress << "validate: " << o.labels.filename().string() << ":" << c.label.line << ": " << c.error
               << " (left out)\n";
      continue;
    }
    outcomes.push_back(outcome_of(c, findings));
    judged.push_back(c);
  }
  if (outcomes.empty()) throw std::runtime_error("no labelled study could be judged");
  Metrics metrics = compute_metrics(outcomes, findings, o.bootstrap);
  const auto wrong = wrong_calls(o, judged, outcomes, clf);
  draw_reliability(metrics, o.out / "reliability.png");
  const json card = card_of(o.manifest);
  std::ofstream(o.out / "report.json") << report_json(o, model, metrics, cases, outcomes, card).dump(1) << "\n";
  write_html(o.out, o, model, metrics, judged, outcomes, wrong, card);
  return metrics;
}

}  // namespace nephra::validate
