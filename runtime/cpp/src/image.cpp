#include "image.hpp"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "errors.hpp"
#include "limits.hpp"
#include "files.hpp"

namespace edgesdk {
namespace {

// ================================================================ PNG

const uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
// The Python runtime's limit (runtime/limits.py MAX_IMAGE_PIXELS, below PIL's bomb limit): a header claiming more
// is refused before anything is allocated
constexpr int64_t kMaxPixels = limits::kMaxImagePixels;

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

struct PngHeader {
  uint32_t width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  int samples() const {  // samples per pixel as stored
    switch (color_type) {
      case 0: return 1;  // gray
      case 2: return 3;  // RGB
      case 3: return 1;  // palette index
      case 4: return 2;  // gray + alpha
      default: return 4;  // RGBA
    }
  }
  int bits_per_pixel() const { return samples() * bit_depth; }
  size_t row_bytes(uint32_t pass_width) const { return (size_t(pass_width) * bits_per_pixel() + 7) / 8; }
};

struct PngFile {
  PngHeader header;
  std::vector<uint8_t> palette;  // RGB triples
  std::vector<uint8_t> palette_alpha;  // from tRNS, may be shorter than the palette
  std::vector<uint8_t> compressed;  // the IDAT chunks, concatenated
};

class PngReader {
 public:
  explicit PngReader(const std::string& path) : path_(path) {}

  [[noreturn]] void invalid(const std::string& reason) const {
    fail(Status::kImageInvalid, path_ + " is not a readable PNG file (" + reason + ")");
  }

  PngFile parse(const std::vector<uint8_t>& bytes) const {
    if (bytes.size() < 8 || std::memcmp(bytes.data(), kPngSignature, 8) != 0) {
      fail(Status::kImageInvalid, path_ + " is not a PNG file: the C++ runtime reads PNG; convert it");
    }
    PngFile png;
    bool have_header = false, have_end = false;
    size_t pos = 8;
    while (!have_end) {
      if (bytes.size() - pos < 12) invalid("truncated: no IEND chunk");
      uint32_t length = read_be32(&bytes[pos]);
      if (length > bytes.size() - pos - 12) invalid("truncated chunk");
      const uint8_t* type = &bytes[pos + 4];
      const uint8_t* data = &bytes[pos + 8];
      uint32_t stored_crc = read_be32(data + length);
      if (crc32(crc32(0L, Z_NULL, 0), type, length + 4) != stored_crc) invalid("chunk checksum mismatch");
      std::string name(reinterpret_cast<const char*>(type), 4);
      if (!have_header && name != "IHDR") invalid("the first chunk is not IHDR");
      if (name == "IHDR") {
        png.header = parse_header(data, length);
        have_header = true;
      } else if (name == "PLTE") {
        if (length % 3 != 0 || length > 256 * 3) invalid("bad palette");
        png.palette.assign(data, data + length);
      } else if (name == "tRNS") {
        if (png.header.color_type == 3) png.palette_alpha.assign(data, data + length);
        // gray and RGB colour keys are ignored, as PIL's conversion to pixels does
      } else if (name == "IDAT") {
        png.compressed.insert(png.compressed.end(), data, data + length);
      } else if (name == "IEND") {
        have_end = true;
      }
      pos += size_t(length) + 12;
    }
    if (png.header.color_type == 3 && png.palette.empty()) invalid("palette image without a palette");
    return png;
  }

 private:
  const std::string& path_;

  PngHeader parse_header(const uint8_t* data, uint32_t length) const {
    if (length != 13) invalid("bad IHDR");
    PngHeader h;
    h.width = read_be32(data);
    h.height = read_be32(data + 4);
    h.bit_depth = data[8];
    h.color_type = data[9];
    h.interlace = data[12];
    if (h.width == 0 || h.height == 0) invalid("bad size");
    if (int64_t(h.width) * h.height > kMaxPixels)
      invalid("claims " + std::to_string(h.width) + "x" + std::to_string(h.height) + " pixels, above the limit of " +
              std::to_string(kMaxPixels / (1024 * 1024)) + " megapixels");
    if (data[10] != 0 || data[11] != 0 || h.interlace > 1) invalid("unknown compression, filter or interlace");
    bool ok = false;
    switch (h.color_type) {
      case 0: ok = h.bit_depth == 1 || h.bit_depth == 2 || h.bit_depth == 4 || h.bit_depth == 8 || h.bit_depth == 16; break;
      case 3: ok = h.bit_depth == 1 || h.bit_depth == 2 || h.bit_depth == 4 || h.bit_depth == 8; break;
      case 2: case 4: case 6: ok = h.bit_depth == 8 || h.bit_depth == 16; break;
    }
    if (!ok) invalid("colour type " + std::to_string(h.color_type) + " with bit depth " + std::to_string(h.bit_depth));
    return h;
  }
};

std::vector<uint8_t> inflate_all(const std::vector<uint8_t>& compressed, size_t expected, const PngReader& reader) {
  std::vector<uint8_t> out(expected);
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) fail(Status::kInternal, "zlib inflateInit failed");
  stream.next_in = const_cast<Bytef*>(compressed.data());
  stream.avail_in = static_cast<uInt>(compressed.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  int result = inflate(&stream, Z_FINISH);
  size_t produced = out.size() - stream.avail_out;
  inflateEnd(&stream);
  // a full buffer without Z_STREAM_END means more data follows than the image needs: tolerated, as PIL does
  bool readable = result == Z_STREAM_END || result == Z_OK || result == Z_BUF_ERROR;
  if (produced != expected || !readable) {
    reader.invalid(produced < expected ? "image data is truncated" : "image data is corrupt");
  }
  return out;
}

uint8_t paeth(int a, int b, int c) {
  int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return static_cast<uint8_t>(a);
  return static_cast<uint8_t>(pb <= pc ? b : c);
}

// Undoes the per-row filters in place; `rows` rows of 1 + row_bytes bytes (the filter type byte first).
void unfilter(uint8_t* data, size_t rows, size_t row_bytes, size_t bpp, const PngReader& reader) {
  const uint8_t* previous = nullptr;
  for (size_t r = 0; r < rows; ++r) {
    uint8_t filter = data[0];
    uint8_t* row = data + 1;
    for (size_t i = 0; i < row_bytes; ++i) {
      int left = i >= bpp ? row[i - bpp] : 0;
      int up = previous ? previous[i] : 0;
      int up_left = previous && i >= bpp ? previous[i - bpp] : 0;
      switch (filter) {
        case 0: break;
        case 1: row[i] = static_cast<uint8_t>(row[i] + left); break;
        case 2: row[i] = static_cast<uint8_t>(row[i] + up); break;
        case 3: row[i] = static_cast<uint8_t>(row[i] + ((left + up) >> 1)); break;
        case 4: row[i] = static_cast<uint8_t>(row[i] + paeth(left, up, up_left)); break;
        default: reader.invalid("unknown row filter " + std::to_string(filter));
      }
    }
    previous = row;
    data += row_bytes + 1;
  }
}

// Sample `index` of an unfiltered row, as 8 bits: low bit depths scaled to 0-255, 16 bits -> the high byte.
uint8_t sample(const uint8_t* row, size_t index, int bit_depth, bool scale) {
  if (bit_depth == 8) return row[index];
  if (bit_depth == 16) return row[2 * index];
  size_t bit = index * bit_depth;
  int value = (row[bit / 8] >> (8 - bit_depth - bit % 8)) & ((1 << bit_depth) - 1);
  return static_cast<uint8_t>(scale ? value * 255 / ((1 << bit_depth) - 1) : value);
}

int output_channels(const PngFile& png) {
  switch (png.header.color_type) {
    case 0: return 1;
    case 2: return 3;
    case 3: return png.palette_alpha.empty() ? 3 : 4;
    default: return 4;
  }
}

// Writes the pixels of one unfiltered row of a pass into the output image.
void store_row(const PngFile& png, const uint8_t* row, uint32_t pass_width, uint8_t* out, int step,
               const PngReader& reader) {
  const PngHeader& h = png.header;
  int channels = output_channels(png);
  for (uint32_t x = 0; x < pass_width; ++x, out += step * channels) {
    switch (h.color_type) {
      case 0:
        out[0] = sample(row, x, h.bit_depth, true);
        break;
      case 2:
        for (int c = 0; c < 3; ++c) out[c] = sample(row, 3 * x + c, h.bit_depth, false);
        break;
      case 3: {
        size_t index = sample(row, x, h.bit_depth, false);
        if (3 * index >= png.palette.size()) reader.invalid("palette index out of range");
        std::memcpy(out, &png.palette[3 * index], 3);
        if (channels == 4) out[3] = index < png.palette_alpha.size() ? png.palette_alpha[index] : 255;
        break;
      }
      case 4:
        out[0] = out[1] = out[2] = sample(row, 2 * x, h.bit_depth, false);
        out[3] = sample(row, 2 * x + 1, h.bit_depth, false);
        break;
      default:
        for (int c = 0; c < 4; ++c) out[c] = sample(row, 4 * x + c, h.bit_depth, false);
    }
  }
}

struct Pass {
  uint32_t x0, y0, dx, dy;
};
constexpr Pass kWholeImage[] = {{0, 0, 1, 1}};
constexpr Pass kAdam7[] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                           {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};

uint32_t pass_extent(uint32_t size, uint32_t start, uint32_t step) {
  return size > start ? (size - start + step - 1) / step : 0;
}

// ---- writing

void append_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  append_be32(out, static_cast<uint32_t>(data.size()));
  size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  append_be32(out, static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), &out[start], static_cast<uInt>(data.size() + 4))));
}

// Each row gets the filter with the smallest sum of absolute (signed) residuals: libpng's default heuristic,
// which compresses photos and gradients far better than no filter.
std::vector<uint8_t> filtered_rows(const Pixels& pixels) {
  size_t bpp = static_cast<size_t>(pixels.channels), row_bytes = size_t(pixels.width) * bpp;
  std::vector<uint8_t> out;
  out.reserve((row_bytes + 1) * size_t(pixels.height));
  std::vector<uint8_t> candidate(row_bytes), best(row_bytes);
  for (int y = 0; y < pixels.height; ++y) {
    const uint8_t* row = &pixels.data[size_t(y) * row_bytes];
    const uint8_t* previous = y > 0 ? row - row_bytes : nullptr;
    long best_cost = -1;
    uint8_t best_filter = 0;
    for (uint8_t filter = 0; filter <= 4; ++filter) {
      long cost = 0;
      for (size_t i = 0; i < row_bytes; ++i) {
        int left = i >= bpp ? row[i - bpp] : 0, up = previous ? previous[i] : 0;
        int up_left = previous && i >= bpp ? previous[i - bpp] : 0;
        int predicted = filter == 0 ? 0 : filter == 1 ? left : filter == 2 ? up
                      : filter == 3 ? (left + up) >> 1 : paeth(left, up, up_left);
        candidate[i] = static_cast<uint8_t>(row[i] - predicted);
        cost += std::abs(static_cast<int8_t>(candidate[i]));
      }
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best_filter = filter;
        best.swap(candidate);
      }
    }
    out.push_back(best_filter);
    out.insert(out.end(), best.begin(), best.end());
  }
  return out;
}

// ================================================================ PIL's bicubic resampler (Resample.c)

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's 8-bit fixed point

double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output pixel: the first input index, the count, and `ksize` fixed-point weights (PIL's precompute_coeffs
// followed by normalize_coeffs_8bpc).
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // out_size * ksize
};

Coefficients precompute(int in_size, int out_size) {
  constexpr double kSupport = 2.0;
  double scale = double(in_size) / out_size, filter_scale = std::max(scale, 1.0);
  double support = kSupport * filter_scale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale, total = 0.0, inverse = 1.0 / filter_scale;
    int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    for (int x = 0; x < xmax; ++x) {
      k[x] = bicubic((x + xmin - center + 0.5) * inverse);
      total += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double w = total != 0.0 ? k[x] / total : k[x];
      // PIL rounds half away from zero into 22 fractional bits
      c.weights[size_t(xx) * c.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t clip8(int32_t accumulated) {
  int32_t v = accumulated >> kPrecisionBits;  // arithmetic shift, as PIL's lookup table index
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One pass along x over rows [row_begin, row_end) of `in`.
Pixels resample_horizontal(const Pixels& in, int out_width, const Coefficients& c, int row_begin, int row_end) {
  Pixels out{out_width, row_end - row_begin, in.channels, {}};
  out.data.resize(size_t(out.width) * out.height * out.channels);
  int ch = in.channels;
  for (int y = row_begin; y < row_end; ++y) {
    const uint8_t* row = &in.data[size_t(y) * in.width * ch];
    uint8_t* target = &out.data[size_t(y - row_begin) * out.width * ch];
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &c.weights[size_t(xx) * c.ksize];
      for (int channel = 0; channel < ch; ++channel) {
        int32_t sum = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < c.count[xx]; ++x) sum += row[(x + c.first[xx]) * ch + channel] * k[x];
        target[xx * ch + channel] = clip8(sum);
      }
    }
  }
  return out;
}

// One pass along y; `row_offset` is the first input row `in` holds (the horizontal pass kept only those needed).
Pixels resample_vertical(const Pixels& in, int out_height, const Coefficients& c, int row_offset) {
  Pixels out{in.width, out_height, in.channels, {}};
  size_t row_bytes = size_t(in.width) * in.channels;
  out.data.resize(row_bytes * out_height);
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &c.weights[size_t(yy) * c.ksize];
    int first = c.first[yy] - row_offset;
    for (size_t i = 0; i < row_bytes; ++i) {
      int32_t sum = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < c.count[yy]; ++y) sum += in.data[size_t(y + first) * row_bytes + i] * k[y];
      out.data[size_t(yy) * row_bytes + i] = clip8(sum);
    }
  }
  return out;
}

// PIL's RGBA <-> RGBa (premultiplied) conversions: Image.resize goes through RGBa for RGBA images.
void premultiply(Pixels& p) {
  for (size_t i = 0; i < p.data.size(); i += 4) {
    unsigned alpha = p.data[i + 3];
    for (int c = 0; c < 3; ++c) {
      unsigned tmp = p.data[i + c] * alpha + 128;
      p.data[i + c] = static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
    }
  }
}

void unpremultiply(Pixels& p) {
  for (size_t i = 0; i < p.data.size(); i += 4) {
    unsigned alpha = p.data[i + 3];
    if (alpha == 0 || alpha == 255) continue;
    for (int c = 0; c < 3; ++c) p.data[i + c] = static_cast<uint8_t>(std::min(255u, 255u * p.data[i + c] / alpha));
  }
}

// PIL's ImagingResample: two separable passes, each rounded to 8 bits, a pass whose size does not change
// skipped. Pillow 13 (the version edgesdk pins) runs the vertical pass first when it removes more than twice as
// many rows as the horizontal pass removes columns (read from its compiled Resample.c: Pillow's source before
// 13 always went horizontal first); the order matters because the intermediate image is rounded.
Pixels resample(const Pixels& in, int width, int height) {
  if (width == in.width && height == in.height) return in;
  Coefficients horizontal = precompute(in.width, width), vertical = precompute(in.height, height);
  if (width == in.width) return resample_vertical(in, height, vertical, 0);
  if (height == in.height) return resample_horizontal(in, width, horizontal, 0, in.height);
  int rows_removed = in.height - height, columns_removed = in.width - width;
  if (rows_removed > 0 && rows_removed > 2 * columns_removed) {
    Pixels down = resample_vertical(in, height, vertical, 0);
    return resample_horizontal(down, width, horizontal, 0, height);
  }
  // horizontal first, over only the rows the vertical pass reads
  int first_row = vertical.first[0];
  int last_row = vertical.first[height - 1] + vertical.count[height - 1];
  Pixels across = resample_horizontal(in, width, horizontal, first_row, last_row);
  return resample_vertical(across, height, vertical, first_row);
}

void check_pixels(const Pixels& p, const char* what) {
  if (p.width < 1 || p.height < 1 || (p.channels != 1 && p.channels != 3 && p.channels != 4) ||
      p.data.size() != size_t(p.width) * p.height * p.channels) {
    fail(Status::kImageInvalid, std::string(what) + ": expected a non-empty image of 1, 3 or 4 channels, got " +
                                    std::to_string(p.width) + "x" + std::to_string(p.height) + "x" +
                                    std::to_string(p.channels) + " with " + std::to_string(p.data.size()) + " bytes");
  }
}

}  // namespace

// ================================================================ public functions

Pixels read_png(const std::string& path) {
  PngReader reader(path);
  PngFile png = reader.parse(read_file_bytes(path, limits::kMaxImageFileBytes));
  const PngHeader& h = png.header;
  bool interlaced = h.interlace == 1;
  const Pass* passes = interlaced ? kAdam7 : kWholeImage;
  int pass_count = interlaced ? 7 : 1;

  size_t expected = 0;
  for (int p = 0; p < pass_count; ++p) {
    uint32_t w = pass_extent(h.width, passes[p].x0, passes[p].dx), rows = pass_extent(h.height, passes[p].y0, passes[p].dy);
    if (w > 0 && rows > 0) expected += size_t(rows) * (1 + h.row_bytes(w));
  }
  std::vector<uint8_t> raw = inflate_all(png.compressed, expected, reader);

  Pixels image{int(h.width), int(h.height), output_channels(png), {}};
  image.data.resize(size_t(h.width) * h.height * image.channels);
  size_t bpp = std::max(1, h.bits_per_pixel() / 8);
  uint8_t* cursor = raw.data();
  for (int p = 0; p < pass_count; ++p) {
    const Pass& pass = passes[p];
    uint32_t w = pass_extent(h.width, pass.x0, pass.dx), rows = pass_extent(h.height, pass.y0, pass.dy);
    if (w == 0 || rows == 0) continue;
    size_t row_bytes = h.row_bytes(w);
    unfilter(cursor, rows, row_bytes, bpp, reader);
    for (uint32_t r = 0; r < rows; ++r) {
      size_t y = pass.y0 + size_t(r) * pass.dy;
      uint8_t* out = &image.data[(y * h.width + pass.x0) * image.channels];
      store_row(png, cursor + r * (row_bytes + 1) + 1, w, out, int(pass.dx), reader);
    }
    cursor += rows * (row_bytes + 1);
  }
  return image;
}

void write_png(const std::string& path, const Pixels& pixels) {
  if (pixels.width < 1 || pixels.height < 1 || (pixels.channels != 1 && pixels.channels != 3 && pixels.channels != 4) ||
      pixels.data.size() != size_t(pixels.width) * pixels.height * pixels.channels) {
    fail(Status::kInvalidArgument, "cannot write " + path + ": pixels must be a non-empty 1, 3 or 4 channel image");
  }
  std::vector<uint8_t> raw = filtered_rows(pixels);
  uLongf compressed_size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> compressed(compressed_size);
  if (compress2(compressed.data(), &compressed_size, raw.data(), static_cast<uLong>(raw.size()), 6) != Z_OK) {
    fail(Status::kInternal, "zlib could not compress " + path);
  }
  compressed.resize(compressed_size);

  std::vector<uint8_t> header;
  append_be32(header, static_cast<uint32_t>(pixels.width));
  append_be32(header, static_cast<uint32_t>(pixels.height));
  uint8_t color_type = pixels.channels == 1 ? 0 : pixels.channels == 3 ? 2 : 6;
  header.insert(header.end(), {8, color_type, 0, 0, 0});

  std::vector<uint8_t> file(kPngSignature, kPngSignature + 8);
  append_chunk(file, "IHDR", header);
  append_chunk(file, "IDAT", compressed);
  append_chunk(file, "IEND", {});
  write_file_atomic(path, file.data(), file.size());
}

Pixels to_channels(const Pixels& pixels, int channels) {
  check_pixels(pixels, "to_channels");
  if (channels != 1 && channels != 3 && channels != 4) {
    fail(Status::kInvalidArgument, "images have 1, 3 or 4 channels, not " + std::to_string(channels));
  }
  if (channels == pixels.channels) return pixels;
  Pixels out{pixels.width, pixels.height, channels, {}};
  size_t count = size_t(pixels.width) * pixels.height;
  out.data.resize(count * channels);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* in = &pixels.data[i * pixels.channels];
    uint8_t* o = &out.data[i * channels];
    uint8_t rgb[3] = {in[0], in[0], in[0]};
    if (pixels.channels >= 3) std::memcpy(rgb, in, 3);
    if (channels == 1) {
      o[0] = static_cast<uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
    } else {
      std::memcpy(o, rgb, 3);
      if (channels == 4) o[3] = pixels.channels == 4 ? in[3] : 255;
    }
  }
  return out;
}

Pixels resize_bicubic(const Pixels& pixels, int width, int height) {
  check_pixels(pixels, "resize");
  if (width < 1 || height < 1) fail(Status::kInvalidArgument, "resize: the target size must be at least 1x1");
  if (width == pixels.width && height == pixels.height) return pixels;
  if (pixels.channels == 4) {
    Pixels premultiplied = pixels;
    premultiply(premultiplied);
    Pixels out = resample(premultiplied, width, height);
    unpremultiply(out);
    return out;
  }
  return resample(pixels, width, height);
}

Pixels center_crop(const Pixels& pixels, int size) {
  check_pixels(pixels, "center_crop");
  if (size < 1) fail(Status::kInvalidArgument, "center_crop: size must be at least 1, got " + std::to_string(size));
  // the same double arithmetic as Python; nearbyint rounds half to even, as Python's round()
  double scale = double(size) / std::min(pixels.width, pixels.height);
  int width = std::max(size, static_cast<int>(std::nearbyint(pixels.width * scale)));
  int height = std::max(size, static_cast<int>(std::nearbyint(pixels.height * scale)));
  Pixels resized = resize_bicubic(pixels, width, height);
  int left = (width - size) / 2, top = (height - size) / 2;
  Pixels out{size, size, pixels.channels, {}};
  size_t row_bytes = size_t(size) * pixels.channels;
  out.data.resize(row_bytes * size);
  for (int y = 0; y < size; ++y) {
    const uint8_t* source = &resized.data[(size_t(y + top) * width + left) * pixels.channels];
    std::memcpy(&out.data[size_t(y) * row_bytes], source, row_bytes);
  }
  return out;
}

Pixels grid(const std::vector<Pixels>& images, int columns) {
  if (images.empty()) fail(Status::kImageInvalid, "grid: expected at least one image");
  const Pixels& first = images[0];
  for (const Pixels& image : images) {
    if (image.channels != 3 || image.width != first.width || image.height != first.height || image.width < 1 ||
        image.height < 1 || image.data.size() != size_t(image.width) * image.height * 3) {
      fail(Status::kImageInvalid, "grid: expected RGB images of one size (B, H, W, 3), got a " +
                                      std::to_string(image.width) + "x" + std::to_string(image.height) + "x" +
                                      std::to_string(image.channels) + " image");
    }
  }
  int count = static_cast<int>(images.size());
  if (columns < 0) fail(Status::kInvalidArgument, "columns must be at least 1, got " + std::to_string(columns));
  if (columns == 0) columns = static_cast<int>(std::ceil(std::sqrt(double(count))));
  int rows = (count + columns - 1) / columns;
  Pixels canvas{columns * first.width, rows * first.height, 3, {}};
  canvas.data.assign(size_t(canvas.width) * canvas.height * 3, 0);
  size_t tile_row_bytes = size_t(first.width) * 3;
  for (int i = 0; i < count; ++i) {
    int r = i / columns, c = i % columns;
    for (int y = 0; y < first.height; ++y) {
      uint8_t* target = &canvas.data[(size_t(r * first.height + y) * canvas.width + size_t(c) * first.width) * 3];
      std::memcpy(target, &images[i].data[size_t(y) * tile_row_bytes], tile_row_bytes);
    }
  }
  return canvas;
}

}  // namespace edgesdk
