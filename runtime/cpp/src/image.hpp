// Images without an image library: PNG read/write (zlib), channel conversion and the centre crop of
// runtime/image.py, reproducing PIL's arithmetic so both runtimes feed a model the same pixels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgesdk {

struct Pixels {
  int width = 0, height = 0, channels = 0;  // channels: 1 (gray), 3 (RGB) or 4 (RGBA)
  std::vector<uint8_t> data;                // height * width * channels bytes, row-major HWC
};

// A PNG file as 8-bit pixels: gray -> 1 channel, RGB -> 3, RGBA -> 4, gray+alpha -> 4 (RGBA), palette -> 3, or
// 4 when its tRNS chunk gives the palette alpha. Gray of 1/2/4 bits is scaled to 0-255 (as PIL); 16-bit samples
// keep their high byte (as PIL does for RGB, RGBA and gray+alpha). Interlaced (Adam7) files are read too.
// Where runtime/classify.py read_image differs: it gives 3 channels for 1-bit gray and for a palette with tRNS
// (the same values once fit_image converts channels), and 16-bit gray comes out of PIL clipped to 255, not scaled.
// Throws Failure(kImageInvalid) for anything else (not a PNG, a corrupt or truncated one), kIoError when the file
// cannot be read.
Pixels read_png(const std::string& path);

// Writes 8-bit gray, RGB or RGBA as PNG, atomically (temp file + rename). Throws Failure(kInvalidArgument) for
// pixels of another shape, kIoError when the file cannot be written.
void write_png(const std::string& path, const Pixels& pixels);

// Pixels with 1 (PIL's convert("L")), 3 (convert("RGB")) or 4 (convert("RGBA")) channels, from 1, 3 or 4.
// Gray uses PIL's integer ITU-R 601-2 luma, L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16; alpha is dropped
// without compositing, as PIL does.
Pixels to_channels(const Pixels& pixels, int channels);

// runtime/image.py center_crop: resize the short side to `size` (aspect kept, PIL's bicubic resampler) and cut
// the central size x size square. Bit-exact with PIL (Pillow 13, the venv's) for 1, 3 and 4 channels: the same
// coefficients, 22-bit fixed point, rounding, clipping and pass order; 4 channels go through premultiplied alpha
// as PIL's RGBA resize does.
Pixels center_crop(const Pixels& pixels, int size);

// PIL's resize(..., BICUBIC) of the whole image (the resampler center_crop uses).
Pixels resize_bicubic(const Pixels& pixels, int width, int height);

// runtime/image.py grid: tiles same-size RGB images row-major, `columns` per row (0: ceil(sqrt(count))), black
// filler. Throws Failure(kImageInvalid) for no images or images of other shapes, kInvalidArgument for columns < 0.
Pixels grid(const std::vector<Pixels>& images, int columns = 0);

}  // namespace edgesdk
