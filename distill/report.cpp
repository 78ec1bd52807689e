// Seed statistics, the comparison table, and the HTML report with inline SVG curves.
#include "distill/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace retort::distill {
namespace {

std::string escape_html(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fmt(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

std::string accuracy_cell(const std::vector<double>& values) {
  const MeanStd s = mean_std(values);
  if (values.size() < 2) return fmt("%.2f", s.mean);
  return fmt("%.2f", s.mean) + " ± " + fmt("%.2f", s.std);
}

std::string duration(double seconds) {
  const long long s = static_cast<long long>(seconds + 0.5);
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%lld:%02lld", s / 60, s % 60);
  return buffer;
}

// Colours for up to eight methods; runs of one method share its colour.
const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                          "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

// One line chart: x = epoch, y = value(stats), a polyline per run, a legend per method.
std::string line_chart(const std::string& title, const std::vector<MethodRuns>& methods,
                       double (*value)(const EpochStats&)) {
  const double width = 640, height = 320, left = 56, right = 150, top = 28, bottom = 40;
  double y_min = 1e300, y_max = -1e300;
  int64_t x_max = 1;
  for (const auto& m : methods) {
    for (const auto& r : m.runs) {
      for (const auto& s : r.history) {
        y_min = std::min(y_min, value(s));
        y_max = std::max(y_max, value(s));
        x_max = std::max(x_max, s.epoch);
      }
    }
  }
  if (y_min > y_max) y_min = 0, y_max = 1;
  if (y_max - y_min < 1e-9) y_max = y_min + 1.0;
  const double pad = 0.05 * (y_max - y_min);
  y_min -= pad;
  y_max += pad;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  auto px = [&](double epoch) { return left + plot_w * (x_max > 1 ? (epoch - 1) / (x_max - 1) : 0.5); };
  auto py = [&](double v) { return top + plot_h * (1.0 - (v - y_min) / (y_max - y_min)); };

  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' viewBox='0 0 " << width << " " << height << "' role='img' aria-label='"
      << escape_html(title) << "'>\n";
  svg << "<text x='" << left << "' y='18' class='title'>" << escape_html(title) << "</text>\n";
  svg << "<rect x='" << left << "' y='" << top << "' width='" << plot_w << "' height='" << plot_h
      << "' class='frame'/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double v = y_min + (y_max - y_min) * i / 4.0;
    svg << "<line x1='" << left << "' x2='" << left + plot_w << "' y1='" << py(v) << "' y2='"
        << py(v) << "' class='grid'/><text x='" << left - 6 << "' y='" << py(v) + 4
        << "' class='tick' text-anchor='end'>" << fmt("%.3g", v) << "</text>\n";
  }
  const int64_t x_step = std::max<int64_t>(1, (x_max + 7) / 8);
  for (int64_t e = 1; e <= x_max; e += x_step) {
    svg << "<text x='" << px(static_cast<double>(e)) << "' y='" << top + plot_h + 16
        << "' class='tick' text-anchor='middle'>" << e << "</text>\n";
  }
  svg << "<text x='" << left + plot_w / 2 << "' y='" << height - 6
      << "' class='tick' text-anchor='middle'>epoch</text>\n";
  for (size_t mi = 0; mi < methods.size(); ++mi) {
    const char* colour = kPalette[mi % 8];
    for (const auto& r : methods[mi].runs) {
      if (r.history.empty()) continue;
      svg << "<polyline fill='none' stroke='" << colour << "' stroke-width='1.6' points='";
      for (const auto& s : r.history) {
        svg << fmt("%.1f", px(static_cast<double>(s.epoch))) << "," << fmt("%.1f", py(value(s)))
            << " ";
      }
      svg << "'/>\n";
    }
    const double ly = top + 14 + 18.0 * static_cast<double>(mi);
    svg << "<line x1='" << left + plot_w + 10 << "' x2='" << left + plot_w + 30 << "' y1='" << ly
        << "' y2='" << ly << "' stroke='" << colour << "' stroke-width='3'/><text x='"
        << left + plot_w + 36 << "' y='" << ly + 4 << "' class='tick'>"
        << escape_html(methods[mi].method) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

double test_acc(const EpochStats& s) { return s.test_acc; }
double train_loss(const EpochStats& s) { return s.train_loss; }
double test_loss(const EpochStats& s) { return s.test_loss; }

}  // namespace

MeanStd mean_std(const std::vector<double>& values) {
  MeanStd out;
  if (values.empty()) return out;
  for (double v : values) out.mean += v;
  out.mean /= static_cast<double>(values.size());
  if (values.size() > 1) {
    double ss = 0.0;
    for (double v : values) ss += (v - out.mean) * (v - out.mean);
    out.std = std::sqrt(ss / static_cast<double>(values.size() - 1));
  }
  return out;
}

std::string format_comparison(const std::vector<MethodRuns>& methods) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof(line), "%-14s %5s %16s %16s %14s %10s\n", "method", "seeds",
                "last-epoch %", "best %", "sample passes", "wall time");
  out << line;
  for (const auto& m : methods) {
    std::vector<double> last, best;
    double passes = 0.0, seconds = 0.0;
    for (const auto& r : m.runs) {
      last.push_back(r.last_acc);
      best.push_back(r.best_acc);
      passes += static_cast<double>(r.sample_passes);
      seconds += r.wall_seconds;
    }
    const double n = std::max<double>(1.0, static_cast<double>(m.runs.size()));
    std::snprintf(line, sizeof(line), "%-14s %5zu %16s %16s %14.0f %10s\n", m.method.c_str(),
                  m.runs.size(), accuracy_cell(last).c_str(), accuracy_cell(best).c_str(),
                  passes / n, duration(seconds / n).c_str());
    out << line;
  }
  return out.str();
}

std::string render_html(const std::string& title, const std::vector<MethodRuns>& methods,
                        const std::vector<std::string>& notes) {
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>"
       << escape_html(title) << "</title>\n<style>\n"
       << "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;"
          "color:#222}\n"
       << "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px "
          "10px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:"
          "left}\n"
       << ".title{font-size:14px;font-weight:600}.tick{font-size:11px;fill:#444}"
          ".frame{fill:none;stroke:#999}.grid{stroke:#eee}\n"
       << "p.note{color:#444}</style></head><body>\n";
  html << "<h1>" << escape_html(title) << "</h1>\n";
  for (const auto& note : notes) html << "<p class='note'>" << escape_html(note) << "</p>\n";
  html << "<table><tr><th>method</th><th>seeds</th><th>last-epoch test acc %</th><th>best test "
          "acc %</th><th>sample passes (per run)</th><th>wall time (per run)</th></tr>\n";
  for (const auto& m : methods) {
    std::vector<double> last, best;
    double passes = 0.0, seconds = 0.0;
    for (const auto& r : m.runs) {
      last.push_back(r.last_acc);
      best.push_back(r.best_acc);
      passes += static_cast<double>(r.sample_passes);
      seconds += r.wall_seconds;
    }
    const double n = std::max<double>(1.0, static_cast<double>(m.runs.size()));
    html << "<tr><td title='" << escape_html(m.description) << "'>" << escape_html(m.method)
         << "</td><td>" << m.runs.size() << "</td><td>" << escape_html(accuracy_cell(last))
         << "</td><td>" << escape_html(accuracy_cell(best)) << "</td><td>"
         << fmt("%.0f", passes / n) << "</td><td>" << duration(seconds / n) << "</td></tr>\n";
  }
  html << "</table>\n<ul>\n";
  for (const auto& m : methods) {
    html << "<li><b>" << escape_html(m.method) << "</b>: " << escape_html(m.description)
         << "</li>\n";
  }
  html << "</ul>\n";
  html << line_chart("Test accuracy (%)", methods, test_acc);
  html << line_chart("Training loss", methods, train_loss);
  html << line_chart("Test loss", methods, test_loss);
  html << "</body></html>\n";
  return html.str();
}

}  // namespace retort::distill
