// Comparison reports: seed aggregation (mean and std), a text table, and a self-contained HTML page.
#pragma once

#include <string>
#include <vector>

#include "distill/trainer.h"

namespace retort::distill {

// One configuration (e.g. "KD") run with one or more seeds.
struct MethodRuns {
  std::string method;       // row label
  std::string description;  // one line: what the method is, with its key settings
  std::vector<RunReport> runs;
};

struct MeanStd {
  double mean = 0.0, std = 0.0;  // sample standard deviation (n - 1); 0 for one run
};
MeanStd mean_std(const std::vector<double>& values);

// A fixed-width table: method, last %, best %, sample passes, wall time; with several seeds the
// accuracies are "mean ± std" over them.
std::string format_comparison(const std::vector<MethodRuns>& methods);

// A self-contained HTML page (inline SVG and CSS, no external assets): the comparison table, the
// test-accuracy and training-loss curves of every run, and `notes` (plain text paragraphs).
std::string render_html(const std::string& title, const std::vector<MethodRuns>& methods,
                        const std::vector<std::string>& notes);

}  // namespace retort::distill
