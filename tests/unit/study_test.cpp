#include <gtest/gtest.h>

#include "nephra/engine/study.h"

namespace ng = nephra::engine;

namespace {

ng::Model toy_model() {
  ng::Model m;
  m.name = "toy";
  m.version = "1";
  m.classes = {"Normal", "Cyst", "Stone", "Tumor"};
  m.decision_thresholds = {{"Cyst", 0.5}, {"Stone", 0.5}, {"Tumor", 0.4}};
  m.min_run_slices = 2;
  return m;
}

ng::SliceRecord rec(double z, int instance, double p_tumor, bool not_assessed = false) {
  ng::SliceRecord r;
  r.source.path = "f" + std::to_string(instance);
  r.source.position = z;
  r.source.instance_number = instance;
  r.result.probabilities = {1.0 - p_tumor, 0.0, 0.0, p_tumor};
  r.result.not_assessed = not_assessed;
  return r;
}

TEST(Study, OrdersByPositionNotByFileOrInstance) {
  // instance numbers run against the positions: the order must follow z (superior first)
  std::vector<ng::SliceRecord> in = {rec(10, 1, 0), rec(30, 2, 0), rec(20, 3, 0)};
  const auto s = ng::aggregate(in, toy_model());
  ASSERT_EQ(s.slices.size(), 3U);
  EXPECT_EQ(s.slices[0].source.instance_number, 2);
  EXPECT_EQ(s.slices[1].source.instance_number, 3);
  EXPECT_EQ(s.slices[2].source.instance_number, 1);
  EXPECT_EQ(s.slices[0].number, 1);
}

TEST(Study, UnknownPositionsFallBackToInstanceNumber) {
  const double nan = std::nan("");
  const auto s = ng::aggregate({rec(nan, 3, 0), rec(nan, 1, 0), rec(nan, 2, 0)}, toy_model());
  EXPECT_EQ(s.slices[0].source.instance_number, 1);
  EXPECT_EQ(s.slices[2].source.instance_number, 3);
}

TEST(Study, AFindingNeedsAContiguousRun) {
  std::vector<ng::SliceRecord> in;
  const double p[] = {0.1, 0.9, 0.1, 0.7, 0.8, 0.95, 0.2, 0.6};
  for (int i = 0; i < 8; ++i) in.push_back(rec(100 - i, i + 1, p[i]));
  const auto s = ng::aggregate(in, toy_model());
  const auto& tumor = s.findings.back();
  EXPECT_EQ(tumor.label, "Tumor");
  EXPECT_TRUE(tumor.present);
  EXPECT_EQ(tumor.flagged, (std::vector<int>{2, 4, 5, 6, 8}));
  ASSERT_EQ(tumor.runs.size(), 1U);  // slice 2 alone and slice 8 alone are not runs
  EXPECT_EQ(tumor.runs[0].first, 4);
  EXPECT_EQ(tumor.runs[0].last, 6);
  EXPECT_DOUBLE_EQ(tumor.max_probability, 0.95);
  EXPECT_EQ(tumor.peak_slice, 6);
  EXPECT_EQ(s.summary(), "AI: suspected kidney tumour on slices 4–6, probability 0.95 (8 slices assessed)");
}

TEST(Study, NotAssessedSlicesNeverFlagAndAreCounted) {
  const auto s = ng::aggregate({rec(3, 1, 0.9, true), rec(2, 2, 0.9, true), rec(1, 3, 0.1)}, toy_model(), 1);
  EXPECT_FALSE(s.any_present());
  EXPECT_EQ(s.not_assessed, 2);
  EXPECT_EQ(s.assessed, 1);
  EXPECT_EQ(s.summary(), "AI: no kidney cyst, stone or tumour found (1 slices assessed, 2 not assessed, 1 unreadable)");
}

TEST(Study, EachFindingHasItsOwnRunLengthAndSaysItsOperatingPoint) {
  auto m = toy_model();
  m.min_run_by_class = {{"Tumor", 4}};  // Cyst and Stone keep the common 2
  std::vector<ng::SliceRecord> in;
  const double p[] = {0.1, 0.7, 0.8, 0.95, 0.2};
  for (int i = 0; i < 5; ++i) in.push_back(rec(100 - i, i + 1, p[i]));
  const auto s = ng::aggregate(in, m);
  const auto& tumor = s.findings.back();
  EXPECT_FALSE(tumor.present);  // a run of 3 is short of 4
  EXPECT_EQ(tumor.flagged, (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(tumor.min_run_slices, 4);
  EXPECT_EQ(s.findings.front().min_run_slices, 2);
  EXPECT_EQ(tumor.operating_point(),
            "Tumor: present when at least 4 adjacent slices have calibrated probability >= 0.400");
}

}  // namespace
