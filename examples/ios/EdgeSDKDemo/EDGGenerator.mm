// Objective-C++ bridge to the edgesdk C++ runtime. edgesdk calls return a Result and never throw, so nothing
// crosses into Objective-C as a C++ exception; a failed Result becomes an NSError (code = status, message).
#import "EDGGenerator.h"

#include <atomic>
#include <memory>

#include "edgesdk/edgesdk.hpp"

NSErrorDomain const EDGErrorDomain = @"dev.edgesdk";

static NSError *EDGError(const edgesdk::Result &result) {
  return [NSError errorWithDomain:EDGErrorDomain
                             code:static_cast<NSInteger>(result.status)
                         userInfo:@{NSLocalizedDescriptionKey : @(result.message.c_str())}];
}

@implementation EDGGenerator {
  std::unique_ptr<edgesdk::Generator> _generator;
  std::atomic<bool> _cancel;
}

- (instancetype)initWithBundlePath:(NSString *)path error:(NSError **)error {
  if ((self = [super init])) {
    edgesdk::Result result = edgesdk::Generator::open(path.UTF8String, {}, &_generator);
    if (!result.ok()) {
      if (error) *error = EDGError(result);
      return nil;
    }
  }
  return self;
}

- (CGImageRef)generate:(NSString *)prompt
                 steps:(NSInteger)steps
                  seed:(uint64_t)seed
              progress:(BOOL (^)(NSInteger, NSInteger))progress
                 error:(NSError **)error {
  _cancel = false;
  edgesdk::GenerateRequest request;
  request.prompts = {prompt.UTF8String};
  request.steps = static_cast<int>(steps);
  request.seed = seed;
  edgesdk::Progress callbacks;
  callbacks.cancel = &_cancel;
  if (progress) callbacks.on_step = [progress](int64_t done, int64_t total, double) { return (bool)progress(done, total); };
  std::vector<edgesdk::Image> images;
  edgesdk::Result result = _generator->generate(request, &images, callbacks);
  if (!result.ok()) {
    if (error) *error = EDGError(result);
    return nil;
  }
  const edgesdk::Image &image = images.front();
  CFDataRef data = CFDataCreate(nullptr, image.pixels.data(), image.pixels.size());
  CGDataProviderRef provider = CGDataProviderCreateWithCFData(data);
  CGColorSpaceRef rgb = CGColorSpaceCreateDeviceRGB();
  CGImageRef out = CGImageCreate(image.width, image.height, 8, 24, image.width * 3, rgb, kCGImageAlphaNone, provider,
                                 nullptr, false, kCGRenderingIntentDefault);
  CGColorSpaceRelease(rgb);
  CGDataProviderRelease(provider);
  CFRelease(data);
  return out;
}

- (void)cancel {
  _cancel = true;
}
@end

BOOL EDGPersonalize(NSString *bundlePath, NSString *imagesDir, NSString *token, NSString *initWord, NSString *output,
                    NSInteger steps, BOOL resume, BOOL (^progress)(NSInteger, NSInteger, double), NSError **error) {
  edgesdk::PersonalizeOptions options;
  options.images_dir = imagesDir.UTF8String;
  options.token = token.UTF8String;
  options.init_word = initWord.UTF8String;
  options.output = output.UTF8String;
  options.steps = steps;
  options.resume = resume;
  edgesdk::Progress callbacks;
  if (progress) callbacks.on_step = [progress](int64_t step, int64_t total, double loss) { return (bool)progress(step, total, loss); };
  edgesdk::PersonalizeSummary summary;
  edgesdk::Result result = edgesdk::personalize(bundlePath.UTF8String, options, {}, &summary, callbacks);
  if (!result.ok() && error) *error = EDGError(result);
  return result.ok();
}
