#include "bench/svg_plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>
#include <string>

namespace kvstash::bench {
namespace {

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST(SvgPlotTest, NiceTicksCoverTheRangeInRoundSteps) {
  EXPECT_EQ(NiceTicks(0, 10, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const std::vector<double> t = NiceTicks(0.93, 1.27, 5);
  ASSERT_GE(t.size(), 3u);
  EXPECT_LE(t.front(), 0.93);
  EXPECT_GE(t.back(), 1.27);
  EXPECT_NEAR(t[1] - t[0], 0.1, 1e-12);
  const std::vector<double> big = NiceTicks(-3500, 12000, 5);
  EXPECT_NEAR(big[1] - big[0], 5000, 1e-9);
}

TEST(SvgPlotTest, RendersEverySeriesWithLegendBarsAndEscapedText) {
  PlotSpec spec;
  spec.title = "TTFT <vs> cached & new";
  spec.x_label = "cached tokens";
  spec.y_label = "ms";
  spec.series = {
      {"f16", {{0, 520, 510, 760}, {900, 90, 80, 180}, {999, 20, 14, 30}}},
      {"q8 \"fast\"",
       {{0, 500, 500, 500},
        {500, std::numeric_limits<double>::quiet_NaN(), 0, 0},
        {999, 18, 18, 18}}}};
  auto svg = RenderSvgPlot(spec);
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_EQ(svg->rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg->find("TTFT &lt;vs&gt; cached &amp; new"), std::string::npos);
  EXPECT_NE(svg->find("q8 &quot;fast&quot;"), std::string::npos);
  EXPECT_EQ(Count(*svg, "<polyline"), 2);
  EXPECT_EQ(Count(*svg, "<circle"), 5);  // the NaN point is left out
  // Error bars: the first series' three points, none for equal bounds.
  EXPECT_EQ(Count(*svg, "stroke-width=\"1.5\""), 3);
  EXPECT_EQ(svg->find("<script"), std::string::npos);
  EXPECT_EQ(svg->find("href"), std::string::npos);  // nothing external
  // Every coordinate is inside the picture.
  const std::regex number("(?:x|y|cx|cy)[12]?=\"(-?[0-9.]+)\"");
  for (auto it = std::sregex_iterator(svg->begin(), svg->end(), number);
       it != std::sregex_iterator(); ++it) {
    const double v = std::stod((*it)[1]);
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, double(spec.width));
  }
}

TEST(SvgPlotTest, RefusesNothingToDraw) {
  PlotSpec spec;
  EXPECT_FALSE(RenderSvgPlot(spec).ok());
  spec.series = {{"empty", {{std::nan(""), 1, 1, 1}}}};
  EXPECT_FALSE(RenderSvgPlot(spec).ok());
  spec.series = {{"one", {{1, 1, 1, 1}}}};
  EXPECT_TRUE(RenderSvgPlot(spec).ok());  // a single point gets a range
  spec.width = 100;
  EXPECT_FALSE(RenderSvgPlot(spec).ok());
}

}  // namespace
}  // namespace kvstash::bench
