// nephra validate's labels parser and study metrics, against hand-computed cases.
#include <gtest/gtest.h>

#include "nephra/validate/labels.h"
#include "nephra/validate/metrics.h"

namespace nv = nephra::validate;

namespace {

const std::vector<std::string> kFindings = {"Cyst", "Stone", "Tumor"};

std::string error_of(const std::string& text) {
  try {
    nv::parse_labels(text, kFindings, "labels.csv");
  } catch (const nv::LabelsError& err) {
    return err.what();
  }
  return "(accepted)";
}

nv::StudyOutcome study(const std::string& name, std::map<std::string, bool> truth, std::map<std::string, bool> called) {
  nv::StudyOutcome s;
  s.study = name;
  s.truth = std::move(truth);
  s.called = std::move(called);
  for (const auto& [f, c] : s.called) s.score[f] = c ? 0.9 : 0.1;
  s.slices = 10;
  return s;
}

}  // namespace

TEST(ValidateLabels, ReadsRowsCommentsAndSliceRanges) {
  const auto labels = nv::parse_labels(
      "\xEF\xBB\xBF# site labels\nstudy,Cyst,Stone,Tumor,slices\n\ncase-1,0,0,1,Tumor:40-46 48\ncase-2,0,0,0,\n"
      "case-3, 1 ,1,0,Cyst:3;Stone:7-9\n",
      kFindings, "labels.csv");
  ASSERT_EQ(labels.size(), 3U);
  EXPECT_EQ(labels[0].study, "case-1");
  EXPECT_EQ(labels[0].line, 4);
  EXPECT_TRUE(labels[0].present.at("Tumor"));
  ASSERT_EQ(labels[0].where.at("Tumor").size(), 2U);
  EXPECT_EQ(labels[0].where.at("Tumor")[0].first, 40);
  EXPECT_EQ(labels[0].where.at("Tumor")[0].last, 46);
  EXPECT_EQ(labels[0].where.at("Tumor")[1].first, 48);
  EXPECT_TRUE(labels[1].normal());
  EXPECT_TRUE(labels[2].present.at("Cyst"));
  EXPECT_EQ(labels[2].where.at("Stone")[0].last, 9);
}

TEST(ValidateLabels, EveryBadRowGetsAnErrorNamingItsLine) {
  const std::string head = "study,Cyst,Stone,Tumor\n";
  EXPECT_EQ(error_of(head + "a,0,0,1\nb,0,yes,0\n"), "labels.csv:3: column Stone: expected 0 or 1, got 'yes'");
  EXPECT_EQ(error_of(head + "a,0,0\n"), "labels.csv:2: expected 4 values, got 3");
  EXPECT_EQ(error_of(head + "a,0,0,1\na,0,0,0\n"), "labels.csv:3: study 'a' is listed twice");
  EXPECT_EQ(error_of(head + ",0,0,0\n"), "labels.csv:2: the study is empty");
  EXPECT_EQ(error_of("study,Cyst,Stone\na,0,0\n"),
            "labels.csv:1: the header has no column 'Tumor' (one per finding: 0 or 1)");
  EXPECT_EQ(error_of("study,Cyst,Stone,Tumor,Kidney\n"),
            "labels.csv:1: unknown column 'Kidney' (expected study, the findings, slices)");
  EXPECT_EQ(error_of("case,Cyst,Stone,Tumor\n"), "labels.csv:1: the header must start with 'study'");
  const std::string with_slices = "study,Cyst,Stone,Tumor,slices\n";
  EXPECT_EQ(error_of(with_slices + "a,0,0,0,Tumor:4\n"),
            "labels.csv:2: slices are given for Tumor, which the row marks absent");
  EXPECT_EQ(error_of(with_slices + "a,0,0,1,Tumor:9-4\n"), "labels.csv:2: slices: range '9-4' ends before it starts");
  EXPECT_EQ(error_of(with_slices + "a,0,0,1,Tumour:4\n"),
            "labels.csv:2: slices: expected FINDING:RANGES (e.g. Tumor:40-46 48), got 'Tumour:4'");
  EXPECT_EQ(error_of(with_slices + "a,0,0,1,Tumor:x\n"),
            "labels.csv:2: slice numbers are whole numbers from 1, got 'x'");
  EXPECT_EQ(error_of("# only a comment\n"), "labels.csv: no header line (study,Cyst,...)");
  EXPECT_EQ(error_of(head), "labels.csv: no study listed");
}

// Six studies: two Tumor (one found), one Cyst (found, and a Stone called too), three normal (one with a false
// Tumor). By hand: Tumor sensitivity 1/2, Cyst 1/1, Stone no labelled study; false findings on normal studies
// Tumor 1/3, any 1/3; Stone called on 1 of the 3 studies labelled with another finding only.
TEST(ValidateMetrics, AHandComputedCase) {
  std::vector<nv::StudyOutcome> s = {
      study("t1", {{"Cyst", false}, {"Stone", false}, {"Tumor", true}},
            {{"Cyst", false}, {"Stone", false}, {"Tumor", true}}),
      study("t2", {{"Cyst", false}, {"Stone", false}, {"Tumor", true}},
            {{"Cyst", false}, {"Stone", false}, {"Tumor", false}}),
      study("c1", {{"Cyst", true}, {"Stone", false}, {"Tumor", false}},
            {{"Cyst", true}, {"Stone", true}, {"Tumor", false}}),
      study("n1", {{"Cyst", false}, {"Stone", false}, {"Tumor", false}},
            {{"Cyst", false}, {"Stone", false}, {"Tumor", true}}),
      study("n2", {{"Cyst", false}, {"Stone", false}, {"Tumor", false}},
            {{"Cyst", false}, {"Stone", false}, {"Tumor", false}}),
      study("n3", {{"Cyst", false}, {"Stone", false}, {"Tumor", false}},
            {{"Cyst", false}, {"Stone", false}, {"Tumor", false}}),
  };
  s[0].not_assessed = 2;
  s[0].strata = {{"scanner", "A"}};
  s[1].strata = {{"scanner", "B"}};
  const auto m = nv::compute_metrics(s, kFindings, 500);
  EXPECT_EQ(m.studies, 6);
  EXPECT_EQ(m.normal_studies, 3);
  const auto& cyst = m.findings[0];
  const auto& stone = m.findings[1];
  const auto& tumor = m.findings[2];
  EXPECT_EQ(tumor.sensitivity.k, 1);
  EXPECT_EQ(tumor.sensitivity.n, 2);
  EXPECT_EQ(cyst.sensitivity.k, 1);
  EXPECT_EQ(cyst.sensitivity.n, 1);
  EXPECT_EQ(stone.sensitivity.n, 0);
  EXPECT_EQ(tumor.false_finding.k, 1);
  EXPECT_EQ(tumor.false_finding.n, 3);
  EXPECT_EQ(cyst.false_finding.k, 0);
  EXPECT_EQ(stone.called_on_others.k, 1);
  EXPECT_EQ(stone.called_on_others.n, 3);
  EXPECT_EQ(m.any_false_finding.k, 1);
  EXPECT_EQ(m.any_false_finding.n, 3);
  EXPECT_EQ(m.not_assessed.k, 2);
  EXPECT_EQ(m.not_assessed.n, 60);
  // Intervals hold the estimate; a rate with no spread has none.
  EXPECT_LE(tumor.false_finding.low, tumor.false_finding.value());
  EXPECT_GE(tumor.false_finding.high, tumor.false_finding.value());
  EXPECT_EQ(cyst.false_finding.low, 0.0);
  EXPECT_EQ(cyst.false_finding.high, 0.0);
  EXPECT_EQ(cyst.sensitivity.low, 1.0);
  // Strata: scanner A holds t1 (found), scanner B t2 (missed).
  ASSERT_EQ(m.strata.size(), 2U);
  EXPECT_EQ(m.strata[0].value, "A");
  EXPECT_EQ(m.strata[0].sensitivity.k, 1);
  EXPECT_EQ(m.strata[1].sensitivity.k, 0);
  EXPECT_EQ(m.strata[1].sensitivity.n, 1);
  // The same input gives the same report.
  EXPECT_EQ(nv::to_json(nv::compute_metrics(s, kFindings, 500)).dump(), nv::to_json(m).dump());
}
