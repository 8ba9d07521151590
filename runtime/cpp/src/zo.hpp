// Forward-only (zeroth-order) Textual Inversion: the C++ port of runtime/zo.py, the on-device training loop.
//
// Spec: specs/zo-personalization.md §3-§7 and §11. Each step evaluates the loss at θ and at n perturbed copies
// θ + μ·u_i in one batched query, turns the differences into a random gradient estimate (RGE), removes the
// low-variance directions of the recent trajectory (Subspace Gradient, SG) and takes an Adam step.
//
// Every operation is done in the same order and precision as the Python original, and random numbers come from
// the same numpy stream (numpy_random.hpp), so that one problem, config and seed give the same trajectory in both
// runtimes (up to the last bits of the SVD and BLAS sums). All optimizer state is float64; the model sees float32.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "numpy_random.hpp"

namespace edgesdk {

// Hyperparameters; the defaults are spec §7. Field names, defaults and validation messages are Python's ZOConfig.
struct ZOConfig {
  int n = 2;                  // directions per step: n + 1 queries
  double mu = 1e-3;           // perturbation size; 1e-2 for bf16 activations
  double lr = 5e-3;
  int64_t steps = 30000;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double adam_eps = 1e-3;     // 1e-3, not the usual 1e-8 (§4)
  bool sg = true;
  int sg_tau = 128;           // SG trajectory buffer length; P is refreshed every tau steps
  double sg_nu = 1e-3;        // variance fraction left out of the kept components
  bool sg_standardize = true;
  bool puts = true;           // Partial Uniform Timestep Sampling; false samples t over [0, T)
  double t_low_frac = 0.5;
  double t_high_frac = 0.9;
  bool dim_scale = true;      // the reference's extra 1/sqrt((d_eff + n - 1) / n)
  bool two_sided = false;     // antithetic pairs θ ± μu_i (2n queries, no θ row)
  int draws = 1;              // independent samples per step, each queried with the same directions
  bool cosine_lr = false;     // lr · ½(1 + cos(π (s − 1) / steps)) over `steps`, else constant
  bool word_directions = false;  // perturb along the problem's direction_basis (the model's word embeddings)
  int64_t checkpoint_every = 50;
  int64_t seed = 0;

  // Throws Failure(kInvalidArgument) with Python's message for the first bad field.
  void validate() const;
  // [lo, hi) to draw t from: (⌊t_low_frac·T⌋, ⌊t_high_frac·T⌋) with PUTS, else (0, T).
  std::pair<int, int> timestep_range(int num_timesteps) const;
  // The same keys and values as Python's ZOConfig.to_json() (sorted keys): checkpoints compare it on resume.
  std::string to_json() const;
  // Loss evaluations per draw: n + 1 one-sided, 2n two-sided.
  int queries() const { return two_sided ? 2 * n : n + 1; }
  // The learning rate of update number s (1-based).
  double lr_at(int64_t s) const;
};

// Θ = [θ, θ + μu_1, ..., θ + μu_n] ((n + 1) x d), or two-sided [θ + μu_1, ..., θ + μu_n, θ − μu_1, ..., θ − μu_n]
// (2n x d), as float32 row-major: each sum in float64, rounded once (§3). `directions` is n x d row-major.
std::vector<float> perturbed_batch(const std::vector<double>& theta, const std::vector<double>& directions, int n,
                                   double mu, bool two_sided = false);

// c_i from perturbed_batch's losses: (L(θ + μu_i) − L(θ)) / μ, or two-sided (L(θ + μu_i) − L(θ − μu_i)) / 2μ.
std::vector<double> directional_coefficients(const std::vector<double>& losses, int n, double mu, bool two_sided);

// B for word_directions (runtime/zo.py word_direction_basis): an orthonormal basis (rows, k x width) of the span of
// the `count` word embeddings (count x width float32) centred on their mean, by modified Gram-Schmidt in their
// order. Empty when count >= width.
std::vector<double> word_direction_basis(const std::vector<float>& embeddings, int count, int width);

// u = z B for z (n x k) and B (k x d), accumulated basis row by basis row (runtime/zo.py basis_directions).
std::vector<double> basis_directions(const std::vector<double>& z, int n, const std::vector<double>& basis, int k,
                                     int d);

// g = Σ c_i u_i / (n · sqrt((d_eff + n − 1) / n)), or / n without dim_scale.
std::vector<double> estimate_gradient(const std::vector<double>& coefficients, const std::vector<double>& directions,
                                      int n, int d_eff, bool dim_scale);

// One-sided random gradient estimate (§3, §4): c_i = (L_i − L_0) / μ and
// B for word_directions (runtime/zo.py word_direction_basis): an orthonormal basis (rows, k x width) of the span of
// the `count` word embeddings (count x width float32) centred on their mean, by modified Gram-Schmidt in their
// order. Empty when count >= width.
std::vector<double> word_direction_basis(const std::vector<float>& embeddings, int count, int width);

// u = z B for z (n x k) and B (k x d), accumulated basis row by basis row (runtime/zo.py basis_directions).
std::vector<double> basis_directions(const std::vector<double>& z, int n, const std::vector<double>& basis, int k,
                                     int d);

// g = Σ c_i u_i / (n · sqrt((d_eff + n − 1) / n)), or / n without dim_scale.
struct RgeResult {
  std::vector<double> gradient;      // d
  std::vector<double> coefficients;  // n
};
RgeResult rge_gradient(const std::vector<double>& losses, const std::vector<double>& directions, int n, double mu,
                       int d_eff, bool dim_scale = true);

// Thin SVD of a rows x cols matrix (row-major) in float64: min(rows, cols) singular values, descending, and the
// matching right singular vectors as rows (count x cols). One-sided Jacobi (Hestenes) rotations: short, accurate
// to the last bits for small singular values, and no LAPACK, which phones do not have.
struct ThinSvd {
  int count = 0;
  std::vector<double> singular_values;
  std::vector<double> right_vectors;  // count x cols; rows for zero singular values are zero
};
ThinSvd thin_svd(const std::vector<double>& matrix, int rows, int cols);

// Subspace Gradient (§6): a ring buffer of the last tau θ values; every tau steps a PCA of it picks the
// low-variance directions (within the trajectory's numerical rank) as the rows of P, and g ← g − (g Pᵀ) P.
class SubspaceGradient {
 public:
  SubspaceGradient(int dim, int tau, double nu, bool standardize);

  int k() const { return k_; }  // rows of P (0: no P)
  std::vector<double> project(const std::vector<double>& g) const;
  // Records θ after update number `step` (1-based); refreshes P when step % tau == 0. True if P changed.
  bool push(const std::vector<double>& theta, int64_t step);
  // Recomputes P from the buffer; keeps the old P (returns false) when all rows are equal.
  bool refresh();

  int dim() const { return dim_; }
  int tau() const { return tau_; }
  int index() const { return index_; }
  const std::vector<double>& buffer() const { return buffer_; }  // tau x dim
  const std::vector<double>& P() const { return P_; }            // k x dim
  // For resume: the caller has checked the sizes (buffer tau x dim, P k x dim, 0 <= index < tau).
  void restore(std::vector<double> buffer, int index, std::vector<double> P, int k);

 private:
  int dim_, tau_;
  double nu_;
  bool standardize_;
  std::vector<double> buffer_;
  int index_ = 0;  // next slot to write
  std::vector<double> P_;
  int k_ = 0;
};

// Adam with the reference constants (§4): ε = 1e-3, no weight decay, no schedule, no clipping.
class ZOAdam {
 public:
  ZOAdam(int dim, double lr, double beta1, double beta2, double eps);
  // θ after update number s (1-based, for the bias correction) at learning rate `lr` (< 0: the constant one); m and
  // v are updated in place.
  std::vector<double> step(const std::vector<double>& theta, const std::vector<double>& g, int64_t s,
                           double lr = -1.0);

  std::vector<double> m, v;

 private:
  double lr_, beta1_, beta2_, eps_;
};

// What the trainer needs from the model side.
class ZOProblem {
 public:
  virtual ~ZOProblem() = default;
  virtual int dim() const = 0;            // d: width of the flat trainable vector
  virtual int num_timesteps() const = 0;  // T: the scheduler's training timesteps
  // Draws everything the queries of one sample share (image, flip, caption, noise, t in [t_low, t_high)) and
  // remembers it for losses(). Must draw only from `rng`, so that a resumed run draws the same numbers. A step
  // with several draws calls draw() and losses() in turn for each.
  virtual void draw(NumpyGenerator& rng, int t_low, int t_high) = 0;
  // Loss of each row of `thetas` (rows x dim, float32, row-major) on the last draw: `rows` values.
  virtual std::vector<double> losses(const std::vector<float>& thetas, int rows) = 0;
  // The rows word_directions perturbs along (k x dim, row-major, k < dim); empty: the whole space.
  virtual std::vector<double> direction_basis() const { return {}; }
};

// Per-step figures (§10.8): L(θ) itself, not a perturbed loss.
struct StepLog {
  int64_t step = 0;
  double loss = 0.0;                  // L(θ): row 0 (two-sided: the mean of the rows), averaged over the draws
  std::vector<double> coefficients;   // c_i, averaged over the step's draws
  double grad_norm = 0.0;             // ‖g‖ before the SG projection
  double grad_norm_projected = 0.0;   // ‖g‖ after it
  int k = 0;                          // rows of P used in this step
  double seconds = 0.0;
};

// The §11 loop over a ZOProblem: one PCG64 generator, atomic checkpoints (.safetensors), bit-exact resume.
class ZOTrainer {
 public:
  // Throws Failure(kInvalidArgument) for a bad config, a theta0 of another width or a non-finite theta0.
  ZOTrainer(ZOProblem& problem, const ZOConfig& config, const std::vector<double>& theta0);

  StepLog step();
  // Steps until `steps` updates in total (done steps count after a resume), until the time budget (seconds, < 0:
  // none) is spent, or until on_step returns false (cancellation). Checkpoints every config.checkpoint_every
  // updates and when it stops, if checkpoint_path is not empty.
  std::vector<StepLog> run(int64_t steps, const std::string& checkpoint_path = "",
                           const std::function<bool(const StepLog&)>& on_step = nullptr,
                           double time_budget_s = -1.0);

  // Writes the whole state atomically. Throws Failure(kIoError) when it cannot.
  void save(const std::string& path) const;
  // Restores a checkpoint; refuses one made with settings that change the trajectory (steps and checkpoint_every
  // may differ), of another width, or a corrupt one: Failure(kCheckpointInvalid).
  static std::unique_ptr<ZOTrainer> resume(const std::string& path, ZOProblem& problem, const ZOConfig& config);
  // Updates a checkpoint holds (0 when the file does not exist): where a resumed run's progress starts.
  static int64_t checkpoint_step(const std::string& path);

  // The learned vector as the model consumes it (float32).
  std::vector<float> token() const;
  int64_t step_count() const { return s_; }
  int dim() const { return dim_; }
  const ZOConfig& config() const { return config_; }
  std::pair<int, int> t_range() const { return t_range_; }
  const std::vector<double>& theta() const { return theta_; }
  const std::vector<double>& adam_m() const { return adam_.m; }
  const std::vector<double>& adam_v() const { return adam_.v; }
  const SubspaceGradient* subspace() const { return sg_.get(); }  // nullptr when SG is off
  const std::vector<double>& sg_P() const;                         // k x dim; empty when there is no P
  NumpyGenerator::State rng_state() const { return rng_.state(); }

 private:
  ZOProblem& problem_;
  ZOConfig config_;
  int dim_;
  std::pair<int, int> t_range_;
  std::vector<double> theta_;
  ZOAdam adam_;
  std::unique_ptr<SubspaceGradient> sg_;
  std::vector<double> basis_;  // word_directions: k x dim; empty: isotropic directions in the whole space
  int basis_rows_ = 0;
  int64_t s_ = 0;  // updates done
  NumpyGenerator rng_;
  mutable int64_t saved_step_ = -1;
};

// Python's repr() of a float ("0.001", "1e-05", "inf", "nan"): error messages read as the Python runtime's.
std::string python_float_repr(double value);

}  // namespace edgesdk
