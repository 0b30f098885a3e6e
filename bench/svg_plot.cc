#include "bench/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "base/check.h"
#include "base/file.h"

namespace kvstash::bench {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf",
                                    "#7f7f7f", "#bcbd22"};

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
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
        out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

// A tick label: up to 4 significant digits, no trailing zeros.
std::string TickLabel(double v) {
  if (std::fabs(v) < 1e-12) return "0";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

bool HasBar(const PlotPoint& p) {
  return std::isfinite(p.y_low) && std::isfinite(p.y_high) &&
         (p.y_low != p.y || p.y_high != p.y);
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void Add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
};

// A range with room: a single value widened, a little padding, and 0
// included when the data is positive and not far above it.
Range Padded(Range r, bool from_zero) {
  if (r.lo == r.hi) {
    const double w = r.lo == 0 ? 1 : std::fabs(r.lo) * 0.1;
    r.lo -= w;
    r.hi += w;
  }
  if (from_zero && r.lo > 0 && r.lo < r.hi * 0.6) r.lo = 0;
  const double pad = (r.hi - r.lo) * 0.05;
  if (r.lo != 0) r.lo -= pad;
  r.hi += pad;
  return r;
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  KV_CHECK(lo < hi && std::isfinite(lo) && std::isfinite(hi) && target >= 2);
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  const double first = std::floor(lo / step) * step;
  for (double t = first; t < hi + step * 0.999; t += step) {
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

Result<std::string> RenderSvgPlot(const PlotSpec& spec) {
  if (spec.width < 200 || spec.height < 150) {
    return Status::InvalidArgument("plot: the size must be at least 200 x 150");
  }
  Range xr, yr;
  for (const PlotSeries& s : spec.series) {
    for (const PlotPoint& p : s.points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      xr.Add(p.x);
      yr.Add(p.y);
      if (HasBar(p)) {
        yr.Add(p.y_low);
        yr.Add(p.y_high);
      }
    }
  }
  if (xr.empty()) return Status::InvalidArgument("plot: no finite point");
  const std::vector<double> xt =
      NiceTicks(Padded(xr, false).lo, Padded(xr, false).hi, 5);
  const std::vector<double> yt =
      NiceTicks(Padded(yr, true).lo, Padded(yr, true).hi, 5);
  const double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();

  // Plot area: room for tick labels left and below, the legend right.
  const double left = 70, right = spec.width - 150.0, top = 40,
               bottom = spec.height - 50.0;
  auto px = [&](double x) {
    return left + (x - x0) / (x1 - x0) * (right - left);
  };
  auto py = [&](double y) {
    return bottom - (y - y0) / (y1 - y0) * (bottom - top);
  };

  std::string svg;
  svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
         std::to_string(spec.width) + "\" height=\"" +
         std::to_string(spec.height) + "\" viewBox=\"0 0 " +
         std::to_string(spec.width) + " " + std::to_string(spec.height) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + Number(spec.width / 2.0) +
         "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
         Escape(spec.title) + "</text>\n";
  for (double t : xt) {
    svg += "<line x1=\"" + Number(px(t)) + "\" y1=\"" + Number(top) +
           "\" x2=\"" + Number(px(t)) + "\" y2=\"" + Number(bottom) +
           "\" stroke=\"#e5e5e5\"/>\n";
    svg += "<text x=\"" + Number(px(t)) + "\" y=\"" + Number(bottom + 16) +
           "\" text-anchor=\"middle\">" + TickLabel(t) + "</text>\n";
  }
  for (double t : yt) {
    svg += "<line x1=\"" + Number(left) + "\" y1=\"" + Number(py(t)) +
           "\" x2=\"" + Number(right) + "\" y2=\"" + Number(py(t)) +
           "\" stroke=\"#e5e5e5\"/>\n";
    svg += "<text x=\"" + Number(left - 6) + "\" y=\"" + Number(py(t) + 4) +
           "\" text-anchor=\"end\">" + TickLabel(t) + "</text>\n";
  }
  svg += "<rect x=\"" + Number(left) + "\" y=\"" + Number(top) + "\" width=\"" +
         Number(right - left) + "\" height=\"" + Number(bottom - top) +
         "\" fill=\"none\" stroke=\"#333\"/>\n";
  svg += "<text x=\"" + Number((left + right) / 2) + "\" y=\"" +
         Number(spec.height - 12.0) + "\" text-anchor=\"middle\">" +
         Escape(spec.x_label) + "</text>\n";
  svg += "<text transform=\"translate(16," + Number((top + bottom) / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + Escape(spec.y_label) +
         "</text>\n";

  int drawn = 0;
  for (const PlotSeries& s : spec.series) {
    const char* colour = kPalette[drawn % std::size(kPalette)];
    std::string line;
    std::string marks;
    for (const PlotPoint& p : s.points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      if (!line.empty()) line += ' ';
      line += Number(px(p.x));
      line += ',';
      line += Number(py(p.y));
      marks += "<circle cx=\"" + Number(px(p.x)) + "\" cy=\"" +
               Number(py(p.y)) + "\" r=\"3.5\" fill=\"" + colour + "\"/>\n";
      if (HasBar(p)) {
        marks += "<line x1=\"" + Number(px(p.x)) + "\" y1=\"" +
                 Number(py(p.y_low)) + "\" x2=\"" + Number(px(p.x)) +
                 "\" y2=\"" + Number(py(p.y_high)) + "\" stroke=\"" + colour +
                 "\" stroke-width=\"1.5\"/>\n";
      }
    }
    if (line.empty()) continue;
    svg += "<polyline points=\"" + line + "\" fill=\"none\" stroke=\"" +
           colour + "\" stroke-width=\"2\"/>\n" + marks;
    const double ly = top + 10 + 20.0 * drawn;
    svg += "<line x1=\"" + Number(right + 12) + "\" y1=\"" + Number(ly) +
           "\" x2=\"" + Number(right + 32) + "\" y2=\"" + Number(ly) +
           "\" stroke=\"" + colour + "\" stroke-width=\"2\"/>\n";
    svg += "<text x=\"" + Number(right + 38) + "\" y=\"" + Number(ly + 4) +
           "\">" + Escape(s.name) + "</text>\n";
    ++drawn;
  }
  svg += "</svg>\n";
  return svg;
}

Status WriteSvgPlot(const PlotSpec& spec, const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::string svg, RenderSvgPlot(spec));
  return WriteFileAtomic(path, svg);
}

}  // namespace kvstash::bench
