// SvgPlot: a line chart of a benchmark's results as one self-contained SVG
// file (no scripts, fonts or services: any browser or image viewer shows
// it), so that `kvstash bench serve --plot` and `kvstash eval --sweep --plot`
// leave a picture beside their numbers.
//
// A chart has a title, axis labels and series of points drawn in the order
// given, each with an optional error bar (min-max of the runs). Axes are
// linear; their ranges cover every point and error bar, padded a little,
// with about five "nice" ticks (1, 2 or 5 times a power of ten) each, and
// the y axis starts at 0 when every value is positive and the data does not
// sit far above it. Series take colours from a fixed palette in order and are
// named in a legend. Points that are not finite are left out. Text is
// escaped for XML. Pure functions; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace kvstash::bench {

struct PlotPoint {
  double x = 0;
  double y = 0;
  // Error bar from y_low to y_high (e.g. the min and max of the runs); both
  // equal to y (or not finite): none.
  double y_low = 0, y_high = 0;
};

struct PlotSeries {
  std::string name;
  std::vector<PlotPoint> points;
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  int width = 720;
  int height = 440;
};

// The chart as an SVG document. InvalidArgument when no series has a finite
// point, or the size is below 200 x 150.
Result<std::string> RenderSvgPlot(const PlotSpec& spec);

// RenderSvgPlot written to `path` (atomically: a temporary file renamed).
Status WriteSvgPlot(const PlotSpec& spec, const std::string& path);

// About `target` tick values covering [lo, hi]: multiples of 1, 2 or 5 times
// a power of ten, ascending, the first <= lo and the last >= hi.
// REQUIRES: lo < hi, both finite; target >= 2.
std::vector<double> NiceTicks(double lo, double hi, int target);

}  // namespace kvstash::bench
