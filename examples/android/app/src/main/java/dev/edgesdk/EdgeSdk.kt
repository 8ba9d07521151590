// Kotlin side of the JNI bridge (app/src/main/cpp/edgesdk_jni.cpp). Not built here: see examples/android/README.md.
package dev.edgesdk

import android.graphics.Bitmap

class EdgeSdkException(val status: Int, message: String) : Exception(message)

fun interface StepListener {
    fun onStep(done: Int, total: Int): Boolean  // return false to cancel
}

/** A text-to-image bundle (NAME.edge folder copied into the app's files directory). Use from one worker thread. */
class EdgeSdk(bundleDir: String, threads: Int = 0) : AutoCloseable {
    private var handle: Long = nativeOpen(bundleDir, threads)

    fun generate(prompt: String, steps: Int = 25, seed: Long = 0, listener: StepListener = StepListener { _, _ -> true }): Bitmap {
        val argb = nativeGenerate(handle, prompt, steps, seed, listener)
        val side = kotlin.math.sqrt(argb.size.toDouble()).toInt()
        return Bitmap.createBitmap(argb, side, side, Bitmap.Config.ARGB_8888)
    }

    /** From the UI thread: the running generate() throws EdgeSdkException(status = 50, cancelled). */
    fun cancel() = nativeCancel(handle)

    override fun close() {
        if (handle != 0L) nativeClose(handle)
        handle = 0L
    }

    private companion object {
        init { System.loadLibrary("edgesdk_jni") }
        @JvmStatic external fun nativeOpen(bundleDir: String, threads: Int): Long
        @JvmStatic external fun nativeGenerate(handle: Long, prompt: String, steps: Int, seed: Long, listener: StepListener): IntArray
        @JvmStatic external fun nativeCancel(handle: Long)
        @JvmStatic external fun nativeClose(handle: Long)
    }
}
