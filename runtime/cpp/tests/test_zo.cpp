// The ZO core (src/zo.hpp): unit tests after tests/test_zo_core.py, and equivalence with runtime/zo.py on a
// synthetic problem (reference data from tests/zo_reference.py in $EDGESDK_CPP_FIXTURES/zo, run here when missing).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "zo_fixtures.hpp"
#include "errors.hpp"
#include "json.hpp"
#include "numpy_random.hpp"
#include "safetensors.hpp"
#include "zo.hpp"

using edgesdk::NumpyGenerator;
using edgesdk::Status;
using edgesdk::ZOConfig;
using edgesdk::ZOTrainer;
namespace json = edgesdk::json;

namespace {

using zo_reference::load_json;
using zo_reference::zo_fixtures;

double hex_double(const json::Value& value) { return std::strtod(value.as_string().c_str(), nullptr); }

std::vector<double> hex_doubles(const json::Value& value) {
  std::vector<double> out;
  for (const json::Value& item : value.as_array()) out.push_back(hex_double(item));
  return out;
}

// An empty folder for this test's files.
std::string scratch_folder(const std::string& name) {
  const std::string folder = check::fixture("zo_scratch/" + name);
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder);
  return folder;
}

double max_abs(const std::vector<double>& x) {
  double out = 0.0;
  for (double value : x) out = std::max(out, std::fabs(value));
  return out;
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double out = 0.0;
  for (size_t i = 0; i < a.size(); ++i) out = std::max(out, std::fabs(a[i] - b[i]));
  return out;
}

// Pᵀ P (d x d) for k x d row-major P: the projector onto P's row space, independent of signs and rotations.
std::vector<double> projector(const std::vector<double>& P, int d) {
  const size_t k = P.size() / static_cast<size_t>(d);
  std::vector<double> out(static_cast<size_t>(d) * d, 0.0);
  for (size_t r = 0; r < k; ++r) {
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j) out[static_cast<size_t>(i) * d + j] += P[r * d + i] * P[r * d + j];
    }
  }
  return out;
}

// ---- the synthetic problem of tests/zo_reference.py (change both together) ----
class Synthetic : public edgesdk::ZOProblem {
 public:
  static constexpr int kDim = 48;
  int dim() const override { return kDim; }
  int num_timesteps() const override { return 1000; }

  // As TokenLoss.draw: image, flip, template, float32 noise (3, 4, 4), t.
  void draw(NumpyGenerator& rng, int t_low, int t_high) override {
    image_ = rng.integers(3);
    flip_ = rng.random() < 0.5;
    template_ = rng.integers(5);
    double raw[kDim];
    rng.standard_normal(raw, kDim);
    for (int j = 0; j < kDim; ++j) noise_[j] = static_cast<double>(static_cast<float>(raw[j]));
    t_ = rng.integers(t_low, t_high);
    ++draws;
  }

  std::vector<double> losses(const std::vector<float>& thetas, int rows) override {
    double e[kDim];
    for (int j = 0; j < kDim; ++j) e[j] = flip_ ? noise_[kDim - 1 - j] : noise_[j];
    const double a = static_cast<double>(t_) / 1000.0;
    const double w = 1.0 + 0.25 * static_cast<double>(template_);
    std::vector<double> out;
    for (int row = 0; row < rows; ++row) {
      double squares = 0.0, dot = 0.0, quartic = 0.0;
      for (int j = 0; j < kDim; ++j) {
        const double th = thetas[static_cast<size_t>(row) * kDim + j];
        const double target = static_cast<double>((7 * j + 13 * image_) % 17) / 17.0 - 0.5;
        const double r = th - target - 0.1 * a * e[j];
        squares += r * r;
        dot += th * e[j];
        quartic += th * th * th * th;
      }
      out.push_back(w * squares + 0.01 * dot * dot + 0.05 * quartic);
    }
    return out;
  }

  // tests/zo_reference.py word_embeddings(): 24 float32 rows behind word_direction_basis
  std::vector<double> direction_basis() const override {
    std::vector<float> rows;
    for (int w = 0; w < 24; ++w)
      for (int j = 0; j < kDim; ++j)
        rows.push_back(static_cast<float>(static_cast<double>((3 * w + 7 * j) % 13) / 13.0 - 0.4 + 0.05 * w));
    return edgesdk::word_direction_basis(rows, 24, kDim);
  }

  int draws = 0;

 private:
  int64_t image_ = 0, template_ = 0, t_ = 0;
  bool flip_ = false;
  double noise_[kDim] = {};
};

std::vector<double> synthetic_theta0() {
  std::vector<double> theta(Synthetic::kDim);
  for (int j = 0; j < Synthetic::kDim; ++j) theta[static_cast<size_t>(j)] = static_cast<double>((5 * j) % 11) / 11.0 - 0.3;
  return theta;
}

ZOConfig synthetic_config() {
  ZOConfig config;
  config.sg_tau = 16;
  config.seed = 3;
  config.lr = 2e-2;
  config.steps = 60;
  return config;
}

// tests/zo_reference.py's estimator_config(): the estimator options on top of the synthetic config
ZOConfig estimator_config() {
  ZOConfig config = synthetic_config();
  config.sg = false;
  config.n = 3;
  config.two_sided = true;
  config.draws = 2;
  config.cosine_lr = true;
  config.word_directions = true;
  return config;
}

// L(θ) = Σ (a_j θ_j − b_j + σ e_j)² with a = linspace(0.5, 1.5, d) and e ~ N(0, I) drawn per step.
class Quadratic : public edgesdk::ZOProblem {
 public:
  explicit Quadratic(int d, double sigma = 0.0) : d_(d), sigma_(sigma), a_(static_cast<size_t>(d)), b_(static_cast<size_t>(d)), e_(static_cast<size_t>(d)) {
    NumpyGenerator rng(0);
    rng.standard_normal(b_.data(), b_.size());
    for (int j = 0; j < d; ++j) a_[static_cast<size_t>(j)] = 0.5 + (d > 1 ? static_cast<double>(j) / (d - 1) : 0.0);
  }
  int dim() const override { return d_; }
  int num_timesteps() const override { return 1000; }
  void draw(NumpyGenerator& rng, int t_low, int t_high) override {
    timesteps.push_back(rng.integers(t_low, t_high));
    rng.standard_normal(e_.data(), e_.size());
  }
  std::vector<double> losses(const std::vector<float>& thetas, int rows) override {
    std::vector<double> out;
    for (int row = 0; row < rows; ++row) {
      std::vector<double> theta(thetas.begin() + static_cast<std::ptrdiff_t>(row) * d_, thetas.begin() + static_cast<std::ptrdiff_t>(row + 1) * d_);
      out.push_back(loss(theta, sigma_));
      out.back() += loss_offset;
    }
    ++calls;
    return drop_one ? std::vector<double>(out.begin() + 1, out.end()) : out;
  }
  double loss(const std::vector<double>& theta, double sigma = 0.0) const {
    double sum = 0.0;
    for (size_t j = 0; j < theta.size(); ++j) {
      const double r = a_[j] * theta[j] - b_[j] + sigma * e_[j];
      sum += r * r;
    }
    return sum;
  }
  std::vector<int64_t> timesteps;
  int calls = 0;
  double loss_offset = 0.0;  // NaN to test the non-finite check
  bool drop_one = false;     // return one loss too few

 private:
  int d_;
  double sigma_;
  std::vector<double> a_, b_, e_;
};

ZOConfig small_config() {
  ZOConfig config;
  config.lr = 2e-2;
  config.sg_tau = 8;
  config.checkpoint_every = 5;
  config.seed = 7;
  return config;
}

bool same_state(const ZOTrainer& a, const ZOTrainer& b) {
  return a.step_count() == b.step_count() && a.theta() == b.theta() && a.adam_m() == b.adam_m() &&
         a.adam_v() == b.adam_v() && a.sg_P() == b.sg_P() && a.rng_state() == b.rng_state() &&
         (a.subspace() == nullptr) == (b.subspace() == nullptr) &&
         (a.subspace() == nullptr || (a.subspace()->buffer() == b.subspace()->buffer() &&
                                      a.subspace()->index() == b.subspace()->index()));
}

// Three strong orthonormal directions walking with steps ~1, plus a 1e-3 random walk in all of R^d (as the Python
// test's _random_walk). Returns tau x d rows.
std::vector<double> random_walk(uint64_t seed, int d, int tau) {
  NumpyGenerator rng(seed);
  std::vector<double> q(static_cast<size_t>(3) * d);
  rng.standard_normal(q.data(), q.size());
  for (int i = 0; i < 3; ++i) {  // Gram-Schmidt
    double* row = &q[static_cast<size_t>(i) * d];
    for (int p = 0; p < i; ++p) {
      const double* prev = &q[static_cast<size_t>(p) * d];
      double dot = 0.0;
      for (int j = 0; j < d; ++j) dot += row[j] * prev[j];
      for (int j = 0; j < d; ++j) row[j] -= dot * prev[j];
    }
    double norm = 0.0;
    for (int j = 0; j < d; ++j) norm += row[j] * row[j];
    for (int j = 0; j < d; ++j) row[j] /= std::sqrt(norm);
  }
  const double scales[3] = {1.0, 0.7, 0.5};
  std::vector<double> walk(static_cast<size_t>(tau) * d, 0.0);
  double strong[3] = {0, 0, 0};
  std::vector<double> weak(static_cast<size_t>(d), 0.0);
  for (int r = 0; r < tau; ++r) {
    for (int i = 0; i < 3; ++i) strong[i] += rng.standard_normal() * scales[i];
    for (int j = 0; j < d; ++j) weak[static_cast<size_t>(j)] += rng.standard_normal();
    for (int j = 0; j < d; ++j) {
      double value = 1e-3 * weak[static_cast<size_t>(j)];
      for (int i = 0; i < 3; ++i) value += strong[i] * q[static_cast<size_t>(i) * d + j];
      walk[static_cast<size_t>(r) * d + j] = value;
    }
  }
  return walk;
}

std::vector<double> row(const std::vector<double>& matrix, int r, int d) {
  return std::vector<double>(matrix.begin() + static_cast<std::ptrdiff_t>(r) * d, matrix.begin() + static_cast<std::ptrdiff_t>(r + 1) * d);
}

}  // namespace


// ---- config ----

TEST_CASE("defaults are spec section 7") {
  const ZOConfig c;
  CHECK(c.n == 2 && c.mu == 1e-3 && c.lr == 5e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.adam_eps == 1e-3);
  CHECK(c.sg && c.sg_tau == 128 && c.sg_nu == 1e-3 && c.sg_standardize);
  CHECK(c.puts && c.t_low_frac == 0.5 && c.t_high_frac == 0.9 && c.dim_scale);
  CHECK(c.steps == 30000 && c.checkpoint_every == 50 && c.seed == 0);
}

TEST_CASE("config validation: Python's messages") {
  const json::Value reference = load_json(zo_fixtures() + "/config.json");
  int checked = 0;
  for (const json::Value& item : reference.at("messages").as_array()) {
    ZOConfig config;
    for (const auto& [key, value] : item.at("change").as_object()) {
      if (key == "n") config.n = static_cast<int>(value.as_int());
      else if (key == "steps") config.steps = value.as_int();
      else if (key == "sg_tau") config.sg_tau = static_cast<int>(value.as_int());
      else if (key == "checkpoint_every") config.checkpoint_every = value.as_int();
      else if (key == "seed") config.seed = value.as_int();
      else if (key == "draws") config.draws = static_cast<int>(value.as_int());
      else if (key == "mu") config.mu = hex_double(value);
      else if (key == "lr") config.lr = hex_double(value);
      else if (key == "beta1") config.beta1 = hex_double(value);
      else if (key == "beta2") config.beta2 = hex_double(value);
      else if (key == "adam_eps") config.adam_eps = hex_double(value);
      else if (key == "sg_nu") config.sg_nu = hex_double(value);
      else if (key == "t_low_frac") config.t_low_frac = hex_double(value);
      else if (key == "t_high_frac") config.t_high_frac = hex_double(value);
      else check::report(__FILE__, __LINE__, "unknown config key " + key);
    }
    const std::string& message = item.at("message").as_string();
    try {
      config.validate();
      check::report(__FILE__, __LINE__, "accepted: " + message);
    } catch (const edgesdk::Failure& e) {
      CHECK(e.status() == Status::kInvalidArgument);
      if (message != e.what()) check::report(__FILE__, __LINE__, std::string(e.what()) + " != " + message);
    }
    ++checked;
  }
  CHECK(checked >= 15);
  ZOConfig().validate();
}

TEST_CASE("to_json has Python's keys and values") {
  const json::Value reference = load_json(zo_fixtures() + "/config.json");
  ZOConfig other;
  other.n = 3;
  other.mu = 1e-2;
  other.lr = 2e-2;
  other.sg = false;
  other.sg_tau = 7;
  other.puts = false;
  other.t_low_frac = 0.7;
  other.dim_scale = false;
  other.checkpoint_every = 5;
  other.seed = 12;
  other.steps = 99;
  other.sg_standardize = false;
  other.two_sided = true;
  other.draws = 2;
  other.cosine_lr = true;
  other.word_directions = true;
  const ZOConfig configs[] = {ZOConfig(), other};
  for (int i = 0; i < 2; ++i) {
    const json::Value ours = json::parse(configs[i].to_json());
    const json::Value python = json::parse(reference.at("configs").as_array()[static_cast<size_t>(i)].as_string());
    CHECK_EQ(ours.size(), python.size());
    for (const auto& [key, value] : python.as_object()) {
      const json::Value* mine = ours.find(key);
      if (mine == nullptr) {
        check::report(__FILE__, __LINE__, "missing key " + key);
        continue;
      }
      const bool same = value.is_number() ? mine->is_number() && mine->as_double() == value.as_double()
                                          : json::dump(*mine) == json::dump(value);
      if (!same) check::report(__FILE__, __LINE__, key + ": " + json::dump(*mine) + " vs " + json::dump(value));
    }
  }
}

TEST_CASE("python_float_repr reads like Python") {
  CHECK(edgesdk::python_float_repr(0.001) == "0.001");
  CHECK(edgesdk::python_float_repr(1e-05) == "1e-05");
  CHECK(edgesdk::python_float_repr(0.0001) == "0.0001");
  CHECK(edgesdk::python_float_repr(1.0) == "1.0");
  CHECK(edgesdk::python_float_repr(-0.0) == "-0.0");
  CHECK(edgesdk::python_float_repr(0.1 + 0.2) == "0.30000000000000004");
  CHECK(edgesdk::python_float_repr(1e16) == "1e+16");
  CHECK(edgesdk::python_float_repr(123456789012345.0) == "123456789012345.0");
  CHECK(edgesdk::python_float_repr(1.5e300) == "1.5e+300");
  CHECK(edgesdk::python_float_repr(INFINITY) == "inf");
}

TEST_CASE("PUTS timestep ranges") {
  CHECK(ZOConfig().timestep_range(1000) == std::make_pair(500, 900));
  CHECK(ZOConfig().timestep_range(200) == std::make_pair(100, 180));
  ZOConfig sdxl;
  sdxl.t_low_frac = 0.7;
  CHECK(sdxl.timestep_range(1000) == std::make_pair(700, 900));
  ZOConfig uniform;
  uniform.puts = false;
  CHECK(uniform.timestep_range(1000) == std::make_pair(0, 1000));
  ZOConfig rounding;  // 0.29 * 100 = 28.999999999999996: the epsilon floors it to 29
  rounding.t_low_frac = 0.29;
  CHECK(rounding.timestep_range(100).first == 29);
  CHECK_FAILS(ZOConfig().timestep_range(0), Status::kInvalidArgument, "num_timesteps must be >= 1, got 0");
  CHECK_FAILS(ZOConfig().timestep_range(2), Status::kInvalidArgument, "timestep range [1, 1) is empty for T = 2");

  ZOConfig config = small_config();
  Quadratic problem(4);
  ZOTrainer(problem, config, std::vector<double>(4, 0.0)).run(400);
  const auto [low, high] = std::minmax_element(problem.timesteps.begin(), problem.timesteps.end());
  CHECK(*low >= 500 && *high < 900);
  Quadratic everywhere(4);
  config.puts = false;
  ZOTrainer(everywhere, config, std::vector<double>(4, 0.0)).run(400);
  const auto [low2, high2] = std::minmax_element(everywhere.timesteps.begin(), everywhere.timesteps.end());
  CHECK(*low2 < 500 && *high2 >= 900);
}

// ---- estimator, Adam ----

TEST_CASE("RGE: hand example") {
  const std::vector<double> u = {1.0, 0.0, 0.0, 1.0};
  const auto plain = edgesdk::rge_gradient({1.0, 1.002, 0.999}, u, 2, 1e-3, 2, false);
  CHECK_NEAR(plain.coefficients[0], 2.0, 1e-9);
  CHECK_NEAR(plain.coefficients[1], -1.0, 1e-9);
  CHECK_NEAR(plain.gradient[0], 1.0, 1e-9);  // Σ c_i u_i / n
  CHECK_NEAR(plain.gradient[1], -0.5, 1e-9);
  const auto scaled = edgesdk::rge_gradient({1.0, 1.002, 0.999}, u, 2, 1e-3, 2, true);
  CHECK_NEAR(scaled.gradient[0], plain.gradient[0] / std::sqrt(1.5), 1e-12);  // / sqrt((d_eff + n - 1) / n)
  CHECK_NEAR(scaled.gradient[1], plain.gradient[1] / std::sqrt(1.5), 1e-12);
  CHECK_FAILS(edgesdk::rge_gradient({0.0, 0.0}, u, 2, 1e-3, 2), Status::kInvalidArgument,
              "expected 3 losses for 2 directions, got shape (2,)");
}

TEST_CASE("perturbed batch: float32, out of place, θ in row 0") {
  const std::vector<double> theta = {0.25, -1.5, 3.0};
  std::vector<double> u(6);
  NumpyGenerator(0).standard_normal(u.data(), u.size());
  const std::vector<float> batch = edgesdk::perturbed_batch(theta, u, 2, 1e-3);
  CHECK_EQ(batch.size(), 9u);
  for (int j = 0; j < 3; ++j) {
    CHECK(batch[static_cast<size_t>(j)] == static_cast<float>(theta[static_cast<size_t>(j)]));
    for (int i = 0; i < 2; ++i) {
      CHECK(batch[static_cast<size_t>(3 * (i + 1) + j)] ==
            static_cast<float>(theta[static_cast<size_t>(j)] + 1e-3 * u[static_cast<size_t>(3 * i + j)]));
    }
  }
  CHECK(theta == (std::vector<double>{0.25, -1.5, 3.0}));
}

TEST_CASE("ZO-Adam: hand-computed steps") {
  edgesdk::ZOAdam adam(2, 5e-3, 0.9, 0.999, 1e-3);
  // s = 1, g = (0.5, −2): m = 0.1 g, v = 0.001 g², m̂ = g, √v̂ = |g|
  std::vector<double> theta = adam.step({1.0, 1.0}, {0.5, -2.0}, 1);
  CHECK_NEAR(adam.m[0], 0.05, 1e-12);
  CHECK_NEAR(adam.m[1], -0.2, 1e-12);
  CHECK_NEAR(adam.v[0], 0.00025, 1e-12);
  CHECK_NEAR(adam.v[1], 0.004, 1e-12);
  CHECK_NEAR(theta[0], 0.99500998004, 1e-10);
  CHECK_NEAR(theta[1], 1.00499750125, 1e-10);
  // s = 2, g = (1, 0)
  theta = adam.step(theta, {1.0, 0.0}, 2);
  CHECK_NEAR(adam.m[0], 0.145, 1e-12);
  CHECK_NEAR(adam.m[1], -0.18, 1e-12);
  CHECK_NEAR(adam.v[0], 0.00124975, 1e-12);
  CHECK_NEAR(adam.v[1], 0.003996, 1e-12);
  CHECK_NEAR(theta[0], 0.9901901656, 1e-9);
  CHECK_NEAR(theta[1], 1.0083454246, 1e-9);
}

// ---- SVD and Subspace Gradient ----

TEST_CASE("thin SVD agrees with numpy.linalg.svd") {
  const json::Value reference = load_json(zo_fixtures() + "/svd.json");
  double worst_sigma = 0.0, worst_projector = 0.0;
  for (const auto& [name, item] : reference.as_object()) {
    const int rows = static_cast<int>(item.at("rows").as_int()), cols = static_cast<int>(item.at("cols").as_int());
    const std::vector<double> matrix = hex_doubles(item.at("matrix"));
    const std::vector<double> expected = hex_doubles(item.at("singular_values"));
    const edgesdk::ThinSvd svd = edgesdk::thin_svd(matrix, rows, cols);
    CHECK_EQ(svd.count, std::min(rows, cols));
    CHECK_EQ(svd.singular_values.size(), expected.size());
    const int rank = static_cast<int>(item.at("rank").as_int());
    double worst = 0.0;
    for (size_t i = 0; i < expected.size() && i < svd.singular_values.size(); ++i) {
      // relative to σ_max: numpy's LAPACK itself is only that accurate for the small ones
      worst = std::max(worst, std::fabs(svd.singular_values[i] - expected[i]) / expected[0]);
      if (static_cast<int>(i) < rank) CHECK(std::fabs(svd.singular_values[i] - expected[i]) <= 1e-12 * expected[i] + 1e-15 * expected[0]);
    }
    CHECK(worst <= 1e-12);
    worst_sigma = std::max(worst_sigma, worst);
    // the right singular subspace of the numerical rank: equal projectors
    const std::vector<double> ours(svd.right_vectors.begin(), svd.right_vectors.begin() + static_cast<std::ptrdiff_t>(rank) * cols);
    const double difference = max_abs_difference(projector(ours, cols), projector(hex_doubles(item.at("vt")), cols));
    if (!(difference <= 1e-10)) check::report(__FILE__, __LINE__, name + ": projector difference " + std::to_string(difference));
    worst_projector = std::max(worst_projector, difference);
    // each vector too, where the singular values are well apart (up to sign)
    const std::vector<double> vt = hex_doubles(item.at("vt"));
    for (int i = 0; i < rank; ++i) {
      const bool apart = (i == 0 || expected[static_cast<size_t>(i) - 1] - expected[static_cast<size_t>(i)] > 1e-6 * expected[0]) &&
                         (i + 1 >= rank || expected[static_cast<size_t>(i)] - expected[static_cast<size_t>(i) + 1] > 1e-6 * expected[0]);
      if (!apart) continue;
      double dot = 0.0;
      for (int c = 0; c < cols; ++c) dot += svd.right_vectors[static_cast<size_t>(i) * cols + c] * vt[static_cast<size_t>(i) * cols + c];
      CHECK_NEAR(std::fabs(dot), 1.0, 1e-9);
    }
  }
  std::fprintf(stderr, "  svd: max |dsigma| / sigma_max = %.3g, max projector difference = %.3g\n", worst_sigma,
               worst_projector);
}

TEST_CASE("SG removes low-variance directions of the trajectory only") {
  for (bool standardize : {true, false}) {
    const int d = 64, tau = 32;
    const std::vector<double> trajectory = random_walk(1, d, tau);
    edgesdk::SubspaceGradient sg(d, tau, 1e-3, standardize);
    for (int s = 1; s <= tau; ++s) {
      const bool refreshed = sg.push(row(trajectory, s - 1, d), s);
      CHECK(refreshed == (s == tau));
      CHECK_EQ(sg.index(), s % tau);
    }
    const int k = sg.k();
    // the three strong components are kept, the null component of the centred buffer is not removed
    CHECK_EQ(k, tau - 1 - 3);
    const std::vector<double>& P = sg.P();
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) {
        double dot = 0.0;
        for (int c = 0; c < d; ++c) dot += P[static_cast<size_t>(i) * d + c] * P[static_cast<size_t>(j) * d + c];
        CHECK_NEAR(dot, i == j ? 1.0 : 0.0, 1e-10);
      }
    }
    // every removed direction lies in the (standardized) trajectory's span
    std::vector<double> centred = trajectory;
    for (int c = 0; c < d; ++c) {
      double mean = 0.0, spread = 0.0;
      for (int r = 0; r < tau; ++r) mean += trajectory[static_cast<size_t>(r) * d + c] / tau;
      for (int r = 0; r < tau; ++r) {
        const double x = trajectory[static_cast<size_t>(r) * d + c] - mean;
        spread += x * x / tau;
      }
      for (int r = 0; r < tau; ++r) {
        double& x = centred[static_cast<size_t>(r) * d + c];
        x = (x - mean) / (standardize ? std::sqrt(spread) : 1.0);
      }
    }
    const edgesdk::ThinSvd span = edgesdk::thin_svd(centred, tau, d);
    const std::vector<double> basis(span.right_vectors.begin(), span.right_vectors.begin() + static_cast<std::ptrdiff_t>(tau - 1) * d);
    const std::vector<double> in_span = projector(basis, d);
    double outside = 0.0;
    for (int i = 0; i < k; ++i) {
      for (int a = 0; a < d; ++a) {
        double projected = 0.0;
        for (int b = 0; b < d; ++b) projected += in_span[static_cast<size_t>(a) * d + b] * P[static_cast<size_t>(i) * d + b];
        outside = std::max(outside, std::fabs(projected - P[static_cast<size_t>(i) * d + a]));
      }
    }
    CHECK(outside < 1e-8);
    // project() is an orthogonal projector onto the complement of P's rows
    std::vector<double> g(static_cast<size_t>(d));
    NumpyGenerator(2).standard_normal(g.data(), g.size());
    const std::vector<double> pg = sg.project(g);
    for (int i = 0; i < k; ++i) {
      double dot = 0.0;
      for (int c = 0; c < d; ++c) dot += P[static_cast<size_t>(i) * d + c] * pg[static_cast<size_t>(c)];
      CHECK_NEAR(dot, 0.0, 1e-10);
    }
    CHECK(max_abs_difference(sg.project(pg), pg) < 1e-12);
  }
}

TEST_CASE("SG: k <= tau - 2 on an isotropic walk; tau > d works too") {
  const int d = 40, tau = 16;
  NumpyGenerator rng(5);
  edgesdk::SubspaceGradient sg(d, tau, 1e-3, true);
  std::vector<double> theta(static_cast<size_t>(d), 0.0);
  for (int s = 1; s <= tau; ++s) {
    for (double& x : theta) x += rng.standard_normal();
    sg.push(theta, s);
  }
  CHECK(sg.k() >= 0 && sg.k() <= tau - 2);
  // more buffer rows than coordinates: the SVD orthogonalizes columns instead
  edgesdk::SubspaceGradient narrow(4, 8, 1e-3, true);
  const std::vector<double> walk = random_walk(3, 4, 8);
  for (int s = 1; s <= 8; ++s) narrow.push(row(walk, s - 1, 4), s);
  CHECK(narrow.k() >= 0 && narrow.k() <= 3);
  const std::vector<double> P = narrow.P();
  for (int i = 0; i < narrow.k(); ++i) {
    double norm = 0.0;
    for (int c = 0; c < 4; ++c) norm += P[static_cast<size_t>(i) * 4 + c] * P[static_cast<size_t>(i) * 4 + c];
    CHECK_NEAR(norm, 1.0, 1e-10);
  }
}

TEST_CASE("SG: a degenerate buffer keeps the old P") {
  const int d = 16, tau = 8;
  edgesdk::SubspaceGradient sg(d, tau, 1e-3, true);
  for (int s = 1; s <= tau; ++s) sg.push(std::vector<double>(static_cast<size_t>(d), 1.0), s);
  CHECK_EQ(sg.k(), 0);
  const std::vector<double> walk = random_walk(0, d, tau);
  for (int s = tau + 1; s <= 2 * tau; ++s) sg.push(row(walk, s - tau - 1, d), s);
  CHECK(sg.k() > 0);
  const std::vector<double> old = sg.P();
  for (int s = 2 * tau + 1; s <= 3 * tau; ++s) CHECK(!sg.push(std::vector<double>(static_cast<size_t>(d), 2.0), s));
  CHECK(sg.P() == old);
}

// ---- the trainer ----

TEST_CASE("trainer reduces a quadratic loss and logs") {
  Quadratic problem(16);
  ZOConfig config;
  config.lr = 2e-2;
  config.sg_tau = 8;
  ZOTrainer trainer(problem, config, std::vector<double>(16, 0.0));
  int seen = 0;
  const auto logs = trainer.run(400, "", [&seen](const edgesdk::StepLog&) { return ++seen > 0; });
  CHECK_EQ(logs.size(), 400u);
  CHECK_EQ(seen, 400);
  CHECK_EQ(trainer.step_count(), 400);
  CHECK_EQ(problem.calls, 400);  // one batched query of n + 1 rows per step
  CHECK(problem.loss(trainer.theta()) < 0.1 * problem.loss(std::vector<double>(16, 0.0)));
  CHECK_EQ(logs[0].step, 1);
  CHECK_NEAR(logs[0].loss, problem.loss(std::vector<double>(16, 0.0)), 1e-6);
  CHECK(logs[0].coefficients.size() == 2 && logs[0].k == 0 && logs[0].seconds >= 0);
  CHECK(logs[0].grad_norm == logs[0].grad_norm_projected);
  CHECK(logs.back().k >= 1 && logs.back().grad_norm_projected < logs.back().grad_norm);
  // the projection acts on g before the moments: this step's increment of m lies outside P's row space
  const std::vector<double> P = trainer.sg_P(), m_before = trainer.adam_m();
  trainer.step();
  std::vector<double> g_used(16);
  for (size_t j = 0; j < 16; ++j) g_used[j] = (trainer.adam_m()[j] - 0.9 * m_before[j]) / 0.1;
  CHECK(max_abs(g_used) > 0);
  for (size_t i = 0; i < P.size() / 16; ++i) {
    double dot = 0.0;
    for (size_t j = 0; j < 16; ++j) dot += P[i * 16 + j] * g_used[j];
    CHECK(std::fabs(dot) <= 1e-9 * max_abs(g_used) * 4);
  }
  CHECK(trainer.token()[3] == static_cast<float>(trainer.theta()[3]));
}

TEST_CASE("trainer: time budget, bad losses, bad θ0") {
  Quadratic problem(4);
  ZOTrainer trainer(problem, small_config(), std::vector<double>(4, 0.0));
  CHECK(trainer.run(100, "", nullptr, 0.0).empty() && trainer.step_count() == 0);
  CHECK_FAILS(trainer.run(-1), Status::kInvalidArgument, "steps must be >= 0, got -1");
  problem.loss_offset = NAN;
  CHECK_FAILS(trainer.step(), Status::kInvalidArgument, "non-finite loss at step 1; lower lr or mu");
  problem.loss_offset = 0.0;
  problem.drop_one = true;
  CHECK_FAILS(trainer.step(), Status::kInternal, "problem.losses returned shape (2,), expected (3,)");
  CHECK_FAILS(ZOTrainer(problem, small_config(), std::vector<double>(5, 0.0)), Status::kInvalidArgument,
              "initial token has shape (5,), the problem trains a vector of width 4");
  CHECK_FAILS(ZOTrainer(problem, small_config(), std::vector<double>{0.0, NAN, 0.0, 0.0}), Status::kInvalidArgument,
              "initial token contains NaN or inf");
  ZOConfig bad = small_config();
  bad.n = 0;
  CHECK_FAILS(ZOTrainer(problem, bad, std::vector<double>(4, 0.0)), Status::kInvalidArgument, "n (directions)");
}

// 60 steps of runtime/zo.py's trainer on the synthetic problem (fixture `name`) against this one, step by step.
void check_equivalence(const std::string& name, const ZOConfig& config, int min_exact_steps) {
  const json::Value reference = load_json(zo_fixtures() + "/" + name);
  {  // the same configuration as the Python run
    const json::Value ours = json::parse(config.to_json()), python = json::parse(reference.at("config").as_string());
    for (const auto& [key, value] : python.as_object()) {
      const json::Value* mine = ours.find(key);
      CHECK(mine != nullptr && (json::dump(*mine) == json::dump(value) ||
                                (mine->is_number() && value.is_number() && mine->as_double() == value.as_double())));
    }
  }
  const std::vector<double> theta0 = hex_doubles(reference.at("theta0"));
  CHECK(theta0 == synthetic_theta0());
  Synthetic problem;
  ZOTrainer trainer(problem, config, theta0);
  const auto& thetas = reference.at("theta").as_array();
  double worst_relative = 0.0, worst_absolute = 0.0;
  int exact_steps = 0;
  for (size_t step = 0; step < thetas.size(); ++step) {
    const edgesdk::StepLog log = trainer.step();
    const std::vector<double> expected = hex_doubles(thetas[step]);
    const double difference = max_abs_difference(trainer.theta(), expected);
    worst_absolute = std::max(worst_absolute, difference);
    worst_relative = std::max(worst_relative, difference / max_abs(expected));
    exact_steps += difference == 0.0 && exact_steps == static_cast<int>(step);
    CHECK_EQ(log.k, reference.at("k").as_array()[step].as_int());
    CHECK_NEAR(log.loss, hex_double(reference.at("loss").as_array()[step]), 1e-9 * std::fabs(log.loss));
  }
  std::fprintf(stderr, "  equivalence (%s): max |dtheta| = %.3g (%.3g relative to max |theta|); bit-exact for the first %d steps\n",
               name.c_str(), worst_absolute, worst_relative, exact_steps);
  CHECK_EQ(trainer.step_count(), 60);
  CHECK(worst_relative <= 1e-10);
  CHECK(exact_steps >= min_exact_steps);  // everything but SG's SVD is numpy's exact arithmetic
  const std::vector<double> m = hex_doubles(reference.at("m")), v = hex_doubles(reference.at("v"));
  CHECK(max_abs_difference(trainer.adam_m(), m) <= 1e-9 * max_abs(m));
  CHECK(max_abs_difference(trainer.adam_v(), v) <= 1e-9 * max_abs(v));
  std::vector<double> P;
  for (const json::Value& p_row : reference.at("P").as_array()) {
    const std::vector<double> values = hex_doubles(p_row);
    P.insert(P.end(), values.begin(), values.end());
  }
  CHECK_EQ(trainer.sg_P().size(), P.size());
  CHECK(max_abs_difference(projector(trainer.sg_P(), Synthetic::kDim), projector(P, Synthetic::kDim)) <= 1e-9);
  const json::Value& state = reference.at("rng_state");
  const NumpyGenerator::State rng = trainer.rng_state();
  CHECK(std::to_string(rng.state_high) == state.at("state_high").as_string());
  CHECK(std::to_string(rng.state_low) == state.at("state_low").as_string());
  CHECK_EQ(problem.draws, 60 * config.draws);
}

TEST_CASE("equivalence with runtime/zo.py: 60 steps on the synthetic problem") {
  check_equivalence("trajectory.json", synthetic_config(), 16);  // up to the first SG refresh
}

TEST_CASE("equivalence with runtime/zo.py, bit for bit: two-sided, two draws per step, cosine lr, word directions") {
  check_equivalence("trajectory_estimator.json", estimator_config(), 60);  // no SG: every step
}

TEST_CASE("checkpoint: 30 steps, save, resume, 30 more = 60 uninterrupted, bit for bit") {
  const std::string folder = scratch_folder("resume");
  const std::string path = folder + "/zo.safetensors";
  Synthetic reference_problem;
  ZOTrainer reference(reference_problem, synthetic_config(), synthetic_theta0());
  std::vector<edgesdk::StepLog> reference_logs = reference.run(60);

  Synthetic first_problem;
  ZOTrainer first(first_problem, synthetic_config(), synthetic_theta0());
  first.run(30, path);
  CHECK_EQ(ZOTrainer::checkpoint_step(path), 30);
  Synthetic second_problem;
  std::unique_ptr<ZOTrainer> resumed = ZOTrainer::resume(path, second_problem, synthetic_config());
  CHECK_EQ(resumed->step_count(), 30);
  const auto logs = resumed->run(60, path);
  CHECK(same_state(*resumed, reference));
  CHECK_EQ(logs.size(), 30u);
  for (size_t i = 0; i < logs.size(); ++i) CHECK(logs[i].loss == reference_logs[i + 30].loss);
  CHECK_EQ(ZOTrainer::checkpoint_step(path), 60);

  // cancellation: on_step returns false at step 23; the checkpoint then holds step 23 (checkpoint_every may differ)
  ZOConfig every5 = synthetic_config();
  every5.checkpoint_every = 5;
  every5.steps = 1000;
  Synthetic cancelled_problem;
  ZOTrainer cancelled(cancelled_problem, every5, synthetic_theta0());
  const auto partial = cancelled.run(60, path, [](const edgesdk::StepLog& log) { return log.step < 23; });
  CHECK_EQ(partial.size(), 23u);
  CHECK_EQ(ZOTrainer::checkpoint_step(path), 23);
  Synthetic third_problem;
  std::unique_ptr<ZOTrainer> again = ZOTrainer::resume(path, third_problem, synthetic_config());
  again->run(60);
  CHECK(same_state(*again, reference));
  // no temp file is left behind
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) files += entry.path().filename() == "zo.safetensors" ? 0 : 1;
  CHECK_EQ(files, 0);
  // SG off: buffer and P are empty tensors, resume works the same
  ZOConfig no_sg = small_config();
  no_sg.sg = false;
  Quadratic quadratic(8, 0.5);
  ZOTrainer plain(quadratic, no_sg, std::vector<double>(8, 0.0));
  plain.run(12, path);
  Quadratic quadratic_reference(8, 0.5);
  ZOTrainer plain_reference(quadratic_reference, no_sg, std::vector<double>(8, 0.0));
  plain_reference.run(20);
  Quadratic quadratic_again(8, 0.5);
  auto plain_resumed = ZOTrainer::resume(path, quadratic_again, no_sg);
  plain_resumed->run(20);
  CHECK(same_state(*plain_resumed, plain_reference));
}

TEST_CASE("resume refuses other settings, other widths and bad files with kCheckpointInvalid") {
  const std::string folder = scratch_folder("refuse");
  const std::string path = folder + "/zo.safetensors";
  Quadratic problem(8);
  ZOTrainer(problem, small_config(), std::vector<double>(8, 0.0)).run(6, path);

  struct Change {
    const char* key;
    void (*apply)(ZOConfig&);
  };
  const Change changes[] = {
      {"lr", [](ZOConfig& c) { c.lr = 1e-2; }},      {"n", [](ZOConfig& c) { c.n = 3; }},
      {"mu", [](ZOConfig& c) { c.mu = 1e-2; }},      {"seed", [](ZOConfig& c) { c.seed = 8; }},
      {"sg_nu", [](ZOConfig& c) { c.sg_nu = 1e-2; }}, {"sg", [](ZOConfig& c) { c.sg = false; }},
      {"puts", [](ZOConfig& c) { c.puts = false; }},
  };
  for (const Change& change : changes) {
    ZOConfig config = small_config();
    change.apply(config);
    Quadratic other(8);
    CHECK_FAILS(ZOTrainer::resume(path, other, config), Status::kCheckpointInvalid,
                std::string("was made with other settings (") + change.key + ": ");
  }
  ZOConfig lr_changed = small_config();
  lr_changed.lr = 1e-2;
  Quadratic other(8);
  CHECK_FAILS(ZOTrainer::resume(path, other, lr_changed), Status::kCheckpointInvalid, "(lr: 0.02 -> 0.01)");
  ZOConfig run_only = small_config();  // the run length and the checkpoint period may differ
  run_only.steps = 99;
  run_only.checkpoint_every = 7;
  CHECK_EQ(ZOTrainer::resume(path, other, run_only)->step_count(), 6);

  Quadratic wider(9);
  CHECK_FAILS(ZOTrainer::resume(path, wider, small_config()), Status::kCheckpointInvalid, "(dim: 8 -> 9)");
  CHECK_FAILS(ZOTrainer::resume(folder + "/missing.safetensors", other, small_config()), Status::kCheckpointInvalid,
              "does not exist");
  CHECK_EQ(ZOTrainer::checkpoint_step(folder + "/missing.safetensors"), 0);

  std::ifstream stream(path, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  const std::string bad = folder + "/bad.safetensors";
  auto write = [&bad](const std::vector<uint8_t>& content) {
    std::ofstream out(bad, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
  };
  write({'n', 'o', 't', ' ', 'a', ' ', 'f', 'i', 'l', 'e'});
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "is not a readable ZO checkpoint");
  for (size_t length = 0; length < bytes.size(); length += 7) {  // truncated anywhere: refused, never a crash
    write(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)));
    CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "checkpoint");
  }
  for (size_t at = 0; at < bytes.size(); at += 3) {  // flipped bytes: refused or resumed, never a crash
    std::vector<uint8_t> flipped = bytes;
    flipped[at] ^= 0x24;
    write(flipped);
    try {
      Quadratic q(8);
      ZOTrainer::resume(bad, q, small_config());
    } catch (const edgesdk::Failure& e) {
      CHECK(e.status() == Status::kCheckpointInvalid);
    }
  }
  // valid files with wrong content
  edgesdk::SafeTensorsFile file = edgesdk::read_safetensors(path);
  edgesdk::SafeTensorsFile wrong = file;
  wrong.tensors["m"] = edgesdk::f64_tensor(std::vector<double>(7, 0.0), {7});
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "is corrupt: m: expected shape (8)");
  wrong = file;
  wrong.tensors["m"] = edgesdk::f32_tensor(std::vector<float>(8, 0.0f), {8});
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "is corrupt");
  wrong = file;
  wrong.tensors.erase("v");
  wrong.metadata.erase("rng");
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "is incomplete (missing v, rng)");
  wrong = file;
  wrong.metadata["format"] = "edgesdk-zo-cpp-0";
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "has format edgesdk-zo-cpp-0");
  wrong = file;
  wrong.metadata["rng"] = "{}";
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "is corrupt");
  wrong = file;
  wrong.tensors["t_range"] = edgesdk::i64_tensor({400, 900}, {2});
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "used timesteps (400, 900), now (500, 900)");
  wrong = file;
  wrong.tensors["sg_index"] = edgesdk::i64_tensor({8}, {1});
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "sg_index");
  wrong = file;
  wrong.metadata["config"] = "[";
  edgesdk::write_safetensors(bad, wrong);
  CHECK_FAILS(ZOTrainer::resume(bad, other, small_config()), Status::kCheckpointInvalid, "is corrupt");

  // a checkpoint that cannot be written: kIoError, and the old one is untouched
  ZOTrainer trainer(problem, small_config(), std::vector<double>(8, 0.0));
  trainer.run(2);
  CHECK_FAILS(trainer.save(folder + "/no/such/folder/zo.safetensors"), Status::kIoError, "cannot write");
}

TEST_MAIN()
