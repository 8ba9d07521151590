// Objective-C face of the edgesdk C++ runtime for Swift apps (not built here: see examples/ios/README.md).
#import <Foundation/Foundation.h>
#import <CoreGraphics/CoreGraphics.h>

NS_ASSUME_NONNULL_BEGIN

extern NSErrorDomain const EDGErrorDomain;  // error.code is an edgesdk::Status number (include/edgesdk/status.hpp)

@interface EDGGenerator : NSObject
- (nullable instancetype)initWithBundlePath:(NSString *)path error:(NSError **)error;
// One image; `progress` runs after every sampler step on the calling thread, return NO to cancel.
- (nullable CGImageRef)generate:(NSString *)prompt
                          steps:(NSInteger)steps
                           seed:(uint64_t)seed
                       progress:(BOOL (^_Nullable)(NSInteger done, NSInteger total))progress
                          error:(NSError **)error CF_RETURNS_RETAINED;
// Safe from any thread: the running generate returns nil with error code 50 (cancelled).
- (void)cancel;
@end

// Learn a new word from the PNG files in `imagesDir`; writes `output` (.safetensors) and a checkpoint beside it.
BOOL EDGPersonalize(NSString *bundlePath, NSString *imagesDir, NSString *token, NSString *initWord,
                    NSString *output, NSInteger steps, BOOL resume,
                    BOOL (^_Nullable progress)(NSInteger step, NSInteger total, double loss), NSError **error);

NS_ASSUME_NONNULL_END
