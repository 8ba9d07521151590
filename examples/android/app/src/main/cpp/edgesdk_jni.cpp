// JNI bridge from Kotlin (dev.edgesdk.EdgeSdk) to the edgesdk C++ runtime. Not built in this repository's CI (no
// Android NDK here): it shows the shape of the binding. Every edgesdk call returns a Result, so nothing throws
// across JNI; a failure becomes an EdgeSdkException carrying the status code and the one-line message.
#include <jni.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "edgesdk/edgesdk.hpp"

namespace {

std::string to_string(JNIEnv* env, jstring text) {
  const char* chars = env->GetStringUTFChars(text, nullptr);
  std::string out(chars);
  env->ReleaseStringUTFChars(text, chars);
  return out;
}

// Raises dev.edgesdk.EdgeSdkException(status, message) in Java; the native function then returns at once.
void throw_result(JNIEnv* env, const edgesdk::Result& result) {
  jclass type = env->FindClass("dev/edgesdk/EdgeSdkException");
  jmethodID init = env->GetMethodID(type, "<init>", "(ILjava/lang/String;)V");
  jobject error = env->NewObject(type, init, static_cast<jint>(result.status), env->NewStringUTF(result.message.c_str()));
  env->Throw(static_cast<jthrowable>(error));
}

// One generator per Kotlin object; the Kotlin side keeps the handle and calls close().
struct Handle {
  std::unique_ptr<edgesdk::Generator> generator;
  std::atomic<bool> cancel{false};
};

}  // namespace

extern "C" JNIEXPORT jlong JNICALL Java_dev_edgesdk_EdgeSdk_nativeOpen(JNIEnv* env, jclass, jstring bundle_dir,
                                                                        jint threads) {
  auto handle = std::make_unique<Handle>();
  edgesdk::Options options;
  options.threads = threads;
  edgesdk::Result result = edgesdk::Generator::open(to_string(env, bundle_dir), options, &handle->generator);
  if (!result.ok()) {
    throw_result(env, result);
    return 0;
  }
  return reinterpret_cast<jlong>(handle.release());
}

// Returns the image as ARGB_8888 ints (what android.graphics.Bitmap.createBitmap takes). `listener` gets
// onStep(done, total) after every sampler step and may return false to cancel.
extern "C" JNIEXPORT jintArray JNICALL Java_dev_edgesdk_EdgeSdk_nativeGenerate(JNIEnv* env, jclass, jlong pointer,
                                                                                jstring prompt, jint steps,
                                                                                jlong seed, jobject listener) {
  auto* handle = reinterpret_cast<Handle*>(pointer);
  handle->cancel = false;
  edgesdk::GenerateRequest request;
  request.prompts = {to_string(env, prompt)};
  request.steps = steps;
  request.seed = static_cast<uint64_t>(seed);
  jclass listener_type = env->GetObjectClass(listener);
  jmethodID on_step = env->GetMethodID(listener_type, "onStep", "(II)Z");
  edgesdk::Progress progress;
  progress.cancel = &handle->cancel;
  progress.on_step = [&](int64_t done, int64_t total, double) {
    return env->CallBooleanMethod(listener, on_step, static_cast<jint>(done), static_cast<jint>(total)) == JNI_TRUE;
  };
  std::vector<edgesdk::Image> images;
  edgesdk::Result result = handle->generator->generate(request, &images, progress);
  if (!result.ok()) {
    throw_result(env, result);
    return nullptr;
  }
  const edgesdk::Image& image = images.front();
  std::vector<jint> argb(static_cast<size_t>(image.width) * image.height);
  for (size_t i = 0; i < argb.size(); ++i) {
    const uint8_t* p = &image.pixels[i * 3];
    argb[i] = static_cast<jint>(0xFF000000u | (uint32_t(p[0]) << 16) | (uint32_t(p[1]) << 8) | uint32_t(p[2]));
  }
  jintArray out = env->NewIntArray(static_cast<jsize>(argb.size()));
  env->SetIntArrayRegion(out, 0, static_cast<jsize>(argb.size()), argb.data());
  return out;
}

// Safe from any thread: the running generate() returns Status::kCancelled after its current step.
extern "C" JNIEXPORT void JNICALL Java_dev_edgesdk_EdgeSdk_nativeCancel(JNIEnv*, jclass, jlong pointer) {
  reinterpret_cast<Handle*>(pointer)->cancel = true;
}

extern "C" JNIEXPORT void JNICALL Java_dev_edgesdk_EdgeSdk_nativeClose(JNIEnv*, jclass, jlong pointer) {
  delete reinterpret_cast<Handle*>(pointer);
}
