// PNG reading against PIL (and hand-written files PIL cannot write), and PIL's convert / resize / center_crop
// reproduced bit for bit.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "image.hpp"
#include "json.hpp"
#include "npy.hpp"

using edgesdk::Pixels;
using edgesdk::Status;

namespace {

// An (H, W, C) uint8 .npy as Pixels.
Pixels load_pixels(const std::string& relative) {
  edgesdk::NpyArray array = edgesdk::read_npy(check::fixture(relative));
  if (array.dtype != "|u1" || array.shape.size() != 3) {
    check::report(__FILE__, __LINE__, relative + " is not (H, W, C) uint8");
    return {};
  }
  return {int(array.shape[1]), int(array.shape[0]), int(array.shape[2]), array.bytes};
}

// Reports the first difference of two images (and the largest), so a failure says how far off it is.
void check_same(const Pixels& got, const Pixels& want, const std::string& what) {
  if (got.width != want.width || got.height != want.height || got.channels != want.channels) {
    check::report(__FILE__, __LINE__, what + ": shape " + std::to_string(got.width) + "x" +
                                          std::to_string(got.height) + "x" + std::to_string(got.channels) + " vs " +
                                          std::to_string(want.width) + "x" + std::to_string(want.height) + "x" +
                                          std::to_string(want.channels));
    return;
  }
  int worst = 0;
  size_t differing = 0;
  for (size_t i = 0; i < got.data.size(); ++i) {
    int d = std::abs(int(got.data[i]) - int(want.data[i]));
    differing += d != 0;
    worst = std::max(worst, d);
  }
  if (differing) {
    check::report(__FILE__, __LINE__, what + ": " + std::to_string(differing) + " values differ, by up to " +
                                          std::to_string(worst));
  }
}

std::vector<std::string> png_names() {
  std::ifstream file(check::fixture("png/names.txt"));
  std::vector<std::string> names;
  for (std::string line; std::getline(file, line);) {
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

}  // namespace

TEST_CASE("every PNG kind decodes to PIL's pixels (16-bit: the high byte)") {
  std::vector<std::string> names = png_names();
  CHECK_EQ(names.size(), size_t(33));
  for (const std::string& name : names) {
    check_same(edgesdk::read_png(check::fixture("png/" + name + ".png")), load_pixels("png/" + name + ".npy"), name);
  }
  CHECK_EQ(edgesdk::read_png(check::fixture("png/palette_trns.png")).channels, 4);
  CHECK_EQ(edgesdk::read_png(check::fixture("png/pil_palette.png")).channels, 3);
  CHECK_EQ(edgesdk::read_png(check::fixture("png/la16_adam7.png")).channels, 4);
  CHECK_EQ(edgesdk::read_png(check::fixture("png/gray2bit.png")).channels, 1);
}

TEST_CASE("other files: not a PNG, truncated, bad checksum, absent") {
  CHECK_THROWS_STATUS(edgesdk::read_png(check::fixture("png/photo.jpg")), Status::kImageInvalid);
  try {
    edgesdk::read_png(check::fixture("png/photo.jpg"));
  } catch (const edgesdk::Failure& e) {
    CHECK(std::string(e.what()).find("photo.jpg is not a PNG file: the C++ runtime reads PNG; convert it") !=
          std::string::npos);
  }
  CHECK_THROWS_STATUS(edgesdk::read_png(check::fixture("png/truncated.png")), Status::kImageInvalid);
  CHECK_THROWS_STATUS(edgesdk::read_png(check::fixture("png/badcrc.png")), Status::kImageInvalid);
  CHECK_THROWS_STATUS(edgesdk::read_png(check::fixture("png/absent.png")), Status::kIoError);
}

TEST_CASE("write_png round-trips, and PIL reads it") {
  for (int channels : {1, 3, 4}) {
    Pixels image{37, 19, channels, {}};
    image.data.resize(size_t(37) * 19 * channels);
    for (size_t i = 0; i < image.data.size(); ++i) image.data[i] = static_cast<uint8_t>((i * 31) ^ (i >> 5));
    std::string path = check::fixture("written_by_cpp_" + std::to_string(channels) + ".png");
    edgesdk::write_png(path, image);
    check_same(edgesdk::read_png(path), image, "round trip");
    edgesdk::NpyArray expected{"|u1", {19, 37, channels}, image.data};
    std::string npy = path + ".npy";
    edgesdk::write_npy(npy, expected);
    const char* python = std::getenv("EDGESDK_PYTHON");
    CHECK(python != nullptr);
    if (python != nullptr) {
      std::string command = std::string("\"") + python + "\" -c \"import numpy as np, sys; from PIL import Image; "
                            "a = np.asarray(Image.open(sys.argv[1])); b = np.load(sys.argv[2]); "
                            "sys.exit(0 if np.array_equal(a.reshape(b.shape), b) else 1)\" \"" + path + "\" \"" + npy + "\"";
      CHECK_EQ(std::system(command.c_str()), 0);
    }
    std::remove(path.c_str());
    std::remove(npy.c_str());
  }
  CHECK_THROWS_STATUS(edgesdk::write_png(check::fixture("x.png"), Pixels{2, 2, 2, std::vector<uint8_t>(8)}),
                      Status::kInvalidArgument);
  CHECK_THROWS_STATUS(edgesdk::write_png(check::fixture("no/such/dir/x.png"), Pixels{1, 1, 1, {0}}), Status::kIoError);
}

TEST_CASE("channel conversions match PIL's convert (L, RGB, RGBA)") {
  for (int from : {1, 3, 4}) {
    Pixels source = load_pixels("image/convert_src" + std::to_string(from) + ".npy");
    for (int to : {1, 3, 4}) {
      std::string name = "convert_" + std::to_string(from) + "_to_" + std::to_string(to);
      check_same(edgesdk::to_channels(source, to), load_pixels("image/" + name + ".npy"), name);
    }
  }
  check_same(edgesdk::to_channels(load_pixels("image/luma_src.npy"), 1), load_pixels("image/luma_L.npy"), "luma");
  CHECK_THROWS_STATUS(edgesdk::to_channels(Pixels{1, 1, 3, {1, 2, 3}}, 2), Status::kInvalidArgument);
  CHECK_THROWS_STATUS(edgesdk::to_channels(Pixels{1, 1, 3, {1, 2}}, 1), Status::kImageInvalid);
}

TEST_CASE("center_crop and resize are bit-exact with PIL's bicubic") {
  std::vector<uint8_t> text = edgesdk::read_file_bytes(check::fixture("image/cases.json"));
  edgesdk::json::Value cases = edgesdk::json::parse(std::string(text.begin(), text.end()), "cases.json");
  int checked = 0;
  for (const edgesdk::json::Value& c : cases.as_array()) {
    std::string name = c.at("name").as_string();
    Pixels source = load_pixels("image/" + name + "_src.npy");
    Pixels result = c.contains("size")
                        ? edgesdk::center_crop(source, int(c.at("size").as_int()))
                        : edgesdk::resize_bicubic(source, int(c.at("width").as_int()), int(c.at("height").as_int()));
    check_same(result, load_pixels("image/" + name + "_out.npy"), name);
    ++checked;
  }
  CHECK_EQ(checked, 20);
  CHECK_THROWS_STATUS(edgesdk::center_crop(Pixels{2, 2, 1, {1, 2, 3, 4}}, 0), Status::kInvalidArgument);
  CHECK_THROWS_STATUS(edgesdk::center_crop(Pixels{}, 4), Status::kImageInvalid);
}

TEST_CASE("grid tiles like runtime/image.py grid") {
  edgesdk::NpyArray tiles = edgesdk::read_npy(check::fixture("image/grid_tiles.npy"));
  std::vector<Pixels> images;
  size_t tile_bytes = size_t(tiles.shape[1] * tiles.shape[2] * 3);
  for (int64_t i = 0; i < tiles.shape[0]; ++i) {
    images.push_back({int(tiles.shape[2]), int(tiles.shape[1]), 3,
                      std::vector<uint8_t>(tiles.bytes.begin() + i * tile_bytes, tiles.bytes.begin() + (i + 1) * tile_bytes)});
  }
  check_same(edgesdk::grid(images), load_pixels("image/grid_auto.npy"), "grid auto");
  check_same(edgesdk::grid(images, 2), load_pixels("image/grid_2.npy"), "grid 2");
  CHECK_THROWS_STATUS(edgesdk::grid({}), Status::kImageInvalid);
  CHECK_THROWS_STATUS(edgesdk::grid(images, -1), Status::kInvalidArgument);
  images[1].channels = 1;
  CHECK_THROWS_STATUS(edgesdk::grid(images), Status::kImageInvalid);
}

TEST_MAIN()
