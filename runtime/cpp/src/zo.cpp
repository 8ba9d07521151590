// Forward-only Textual Inversion core; see zo.hpp. Line for line the arithmetic of runtime/zo.py: the order of the
// operations matters, because the first steps must match Python's bit for bit (rounding differences in θ would be
// amplified by the float32 rounding at the model boundary).
#include "zo.hpp"

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>

#include "errors.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace edgesdk {
namespace {

const char* const kCheckpointFormat = "edgesdk-zo-cpp-1";

std::string shape_text(size_t size) { return "(" + std::to_string(size) + ",)"; }  // numpy's repr of (n,)

std::string bool_text(bool value) { return value ? "True" : "False"; }

// ---- config fields, for to_json and the resume comparison -------------------------------------------------------

enum class FieldKind { kInt, kFloat, kBool };

FieldKind field_kind(const std::string& name) {
  static const char* const int_fields[] = {"n", "steps", "sg_tau", "checkpoint_every", "seed", "draws"};
  static const char* const bool_fields[] = {"sg",        "sg_standardize", "puts", "dim_scale",
                                            "two_sided", "cosine_lr",      "word_directions"};
  for (const char* field : int_fields) {
    if (name == field) return FieldKind::kInt;
  }
  for (const char* field : bool_fields) {
    if (name == field) return FieldKind::kBool;
  }
  return FieldKind::kFloat;
}

// Python's repr of a value json.loads produced (None for a missing key), for the "other settings" message.
std::string value_repr(const std::string& key, const json::Value* value) {
  if (value == nullptr || value->is_null()) return "None";
  if (value->is_bool()) return bool_text(value->as_bool());
  if (value->is_string()) return "'" + value->as_string() + "'";
  if (value->is_number()) {
    if (field_kind(key) == FieldKind::kInt) {
      try {
        return std::to_string(value->as_int());
      } catch (const Failure&) {
      }
    }
    if (field_kind(key) == FieldKind::kFloat) return python_float_repr(value->as_double());
  }
  return json::dump(*value);
}

// Python's == on values json.loads produced (numbers compare by value: 2 == 2.0).
bool same_value(const json::Value* a, const json::Value* b) {
  if (a == nullptr || b == nullptr) return a == b;
  if (a->is_number() && b->is_number()) return a->as_double() == b->as_double();
  return json::dump(*a) == json::dump(*b);
}

// ---- the loop's pieces ------------------------------------------------------------------------------------------

std::vector<double> checked_losses(ZOProblem& problem, const std::vector<float>& thetas, int rows, int64_t step) {
  std::vector<double> losses = problem.losses(thetas, rows);
  if (losses.size() != static_cast<size_t>(rows)) {
    fail(Status::kInternal, "problem.losses returned shape " + shape_text(losses.size()) + ", expected (" +
                                std::to_string(rows) + ",)");
  }
  for (double loss : losses) {
    if (!std::isfinite(loss)) {
      fail(Status::kInvalidArgument, "non-finite loss at step " + std::to_string(step) +
                                         "; lower lr or mu, or check the model outputs");
    }
  }
  return losses;
}

double norm(const std::vector<double>& x) {
  double sum = 0.0;
  for (double value : x) sum += value * value;
  return std::sqrt(sum);
}

int checked_dim(int dim, const std::vector<double>& theta0) {
  if (dim < 1 || theta0.size() != static_cast<size_t>(dim)) {
    fail(Status::kInvalidArgument, "initial token has shape " + shape_text(theta0.size()) +
                                       ", the problem trains a vector of width " + std::to_string(dim));
  }
  for (double value : theta0) {
    if (!std::isfinite(value)) fail(Status::kInvalidArgument, "initial token contains NaN or inf");
  }
  return dim;
}

const ZOConfig& validated(const ZOConfig& config) {
  config.validate();
  return config;
}

// One-sided Jacobi: rotate pairs of the `count` vectors (rows of `vectors`, each `length` long) until every pair is
// orthogonal to working precision. `companions` (count rows of `companion_length`) get the same rotations.
void orthogonalize(std::vector<double>& vectors, int count, int length, std::vector<double>& companions,
                   int companion_length) {
  const double tolerance = DBL_EPSILON * std::sqrt(static_cast<double>(length));
  const int max_sweeps = 100;  // converges in ~10 sweeps; the cap only guards against a rounding cycle
  auto rotate = [](double* a, double* b, int size, double c, double s) {
    for (int i = 0; i < size; ++i) {
      const double x = a[i], y = b[i];
      a[i] = c * x - s * y;
      b[i] = s * x + c * y;
    }
  };
  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int i = 0; i + 1 < count; ++i) {
      for (int j = i + 1; j < count; ++j) {
        double* a = &vectors[static_cast<size_t>(i) * length];
        double* b = &vectors[static_cast<size_t>(j) * length];
        double alpha = 0.0, beta = 0.0, gamma = 0.0;
        for (int e = 0; e < length; ++e) {
          alpha += a[e] * a[e];
          beta += b[e] * b[e];
          gamma += a[e] * b[e];
        }
        if (alpha == 0.0 || beta == 0.0) continue;
        if (std::fabs(gamma) <= tolerance * std::sqrt(alpha) * std::sqrt(beta)) continue;
        // The rotation that zeroes the pair's inner product: t = tan(angle) is the smaller root of
        // t² + 2ζt − 1 = 0 with ζ = (β − α) / 2γ.
        const double zeta = (beta - alpha) / (2.0 * gamma);
        const double t = (zeta >= 0.0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::hypot(1.0, zeta));
        const double c = 1.0 / std::sqrt(1.0 + t * t);
        const double s = c * t;
        rotate(a, b, length, c, s);
        if (companion_length > 0) {
          rotate(&companions[static_cast<size_t>(i) * companion_length],
                 &companions[static_cast<size_t>(j) * companion_length], companion_length, c, s);
        }
        rotated = true;
      }
    }
    if (!rotated) break;
  }
}

}  // namespace

// ---- ZOConfig ---------------------------------------------------------------------------------------------------

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // The shortest digits that read back as the same double (as Python's repr), found by raising the precision.
  char buffer[40];
  for (int precision = 0; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*e", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::string text(buffer);
  const bool negative = text[0] == '-';
  if (negative) text.erase(0, 1);
  const size_t e_at = text.find('e');
  const int exponent = std::atoi(text.c_str() + e_at + 1);
  std::string digits = text.substr(0, e_at);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int point = exponent + 1;  // digits are 0.d1d2... x 10^point
  const int count = static_cast<int>(digits.size());
  std::string out;
  if (point <= -4 || point > 16) {  // Python's switch to exponent notation
    out = digits.substr(0, 1) + (count > 1 ? "." + digits.substr(1) : "");
    char exp_text[16];
    std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp_text;
  } else if (point <= 0) {
    out = "0." + std::string(static_cast<size_t>(-point), '0') + digits;
  } else if (point < count) {
    out = digits.substr(0, static_cast<size_t>(point)) + "." + digits.substr(static_cast<size_t>(point));
  } else {
    out = digits + std::string(static_cast<size_t>(point - count), '0') + ".0";
  }
  return negative ? "-" + out : out;
}

void ZOConfig::validate() const {
  auto positive = [](double x) { return std::isfinite(x) && x > 0; };
  auto r = python_float_repr;
  struct Check {
    bool ok;
    std::string message;
  };
  const Check checks[] = {
      {n >= 1, "n (directions) must be an integer >= 1, got " + std::to_string(n)},
      {positive(mu), "mu must be > 0, got " + r(mu)},
      {positive(lr), "lr must be > 0, got " + r(lr)},
      {steps >= 0, "steps must be an integer >= 0, got " + std::to_string(steps)},
      {0 <= beta1 && beta1 < 1 && 0 <= beta2 && beta2 < 1, "betas must be in [0, 1), got " + r(beta1) + ", " + r(beta2)},
      {positive(adam_eps), "adam_eps must be > 0, got " + r(adam_eps)},
      {sg_tau >= 2, "sg_tau must be an integer >= 2, got " + std::to_string(sg_tau)},
      {0 < sg_nu && sg_nu < 1, "sg_nu must be in (0, 1), got " + r(sg_nu)},
      {0 <= t_low_frac && t_low_frac < t_high_frac && t_high_frac <= 1,
       "need 0 <= t_low_frac < t_high_frac <= 1, got " + r(t_low_frac) + ", " + r(t_high_frac)},
      {checkpoint_every >= 1, "checkpoint_every must be an integer >= 1, got " + std::to_string(checkpoint_every)},
      {seed >= 0, "seed must be an integer >= 0, got " + std::to_string(seed)},
      {draws >= 1, "draws must be an integer >= 1, got " + std::to_string(draws)},
  };
  for (const Check& check : checks) {
    if (!check.ok) fail(Status::kInvalidArgument, check.message);
  }
}

std::pair<int, int> ZOConfig::timestep_range(int num_timesteps) const {
  if (num_timesteps < 1) {
    fail(Status::kInvalidArgument, "num_timesteps must be >= 1, got " + std::to_string(num_timesteps));
  }
  if (!puts) return {0, num_timesteps};
  // The epsilon keeps products like 0.29 * 100 = 28.999999999999996 from flooring one step too low.
  const int lo = static_cast<int>(std::floor(t_low_frac * num_timesteps + 1e-9));
  const int hi = static_cast<int>(std::floor(t_high_frac * num_timesteps + 1e-9));
  if (lo >= hi) {
    fail(Status::kInvalidArgument, "timestep range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                       ") is empty for T = " + std::to_string(num_timesteps) +
                                       "; widen t_low/high_frac");
  }
  return {lo, hi};
}

std::string ZOConfig::to_json() const {
  // Sorted keys, as Python's json.dumps(..., sort_keys=True).
  json::Value value = json::Value::object();
  value.set("adam_eps", json::Value::number(adam_eps));
  value.set("beta1", json::Value::number(beta1));
  value.set("beta2", json::Value::number(beta2));
  value.set("checkpoint_every", json::Value::integer(checkpoint_every));
  value.set("cosine_lr", json::Value::boolean(cosine_lr));
  value.set("dim_scale", json::Value::boolean(dim_scale));
  value.set("draws", json::Value::integer(draws));
  value.set("lr", json::Value::number(lr));
  value.set("mu", json::Value::number(mu));
  value.set("n", json::Value::integer(n));
  value.set("puts", json::Value::boolean(puts));
  value.set("seed", json::Value::integer(seed));
  value.set("sg", json::Value::boolean(sg));
  value.set("sg_nu", json::Value::number(sg_nu));
  value.set("sg_standardize", json::Value::boolean(sg_standardize));
  value.set("sg_tau", json::Value::integer(sg_tau));
  value.set("steps", json::Value::integer(steps));
  value.set("t_high_frac", json::Value::number(t_high_frac));
  value.set("t_low_frac", json::Value::number(t_low_frac));
  value.set("two_sided", json::Value::boolean(two_sided));
  value.set("word_directions", json::Value::boolean(word_directions));
  return json::dump(value);
}

double ZOConfig::lr_at(int64_t s) const {
  if (cosine_lr && steps > 0) {
    const double done = static_cast<double>(std::min<int64_t>(s - 1, steps));
    return lr * 0.5 * (1.0 + std::cos(M_PI * done / static_cast<double>(steps)));
  }
  return lr;
}

// ---- estimator, SVD, SG, Adam -----------------------------------------------------------------------------------

std::vector<float> perturbed_batch(const std::vector<double>& theta, const std::vector<double>& directions, int n,
                                   double mu, bool two_sided) {
  const size_t d = theta.size(), rows = static_cast<size_t>(n);
  // built out of place, each sum in float64 and rounded once (never add-then-subtract, §3)
  if (two_sided) {
    std::vector<float> batch(2 * rows * d);
    for (size_t i = 0; i < rows; ++i) {
      for (size_t j = 0; j < d; ++j) {
        batch[i * d + j] = static_cast<float>(theta[j] + mu * directions[i * d + j]);
        batch[(rows + i) * d + j] = static_cast<float>(theta[j] - mu * directions[i * d + j]);
      }
    }
    return batch;
  }
  std::vector<float> batch((rows + 1) * d);
  for (size_t j = 0; j < d; ++j) batch[j] = static_cast<float>(theta[j]);
  for (size_t i = 0; i < rows; ++i) {
    for (size_t j = 0; j < d; ++j) batch[(i + 1) * d + j] = static_cast<float>(theta[j] + mu * directions[i * d + j]);
  }
  return batch;
}

std::vector<double> directional_coefficients(const std::vector<double>& losses, int n, double mu, bool two_sided) {
  const size_t expected = two_sided ? 2 * static_cast<size_t>(n) : static_cast<size_t>(n) + 1;
  if (losses.size() != expected) {
    fail(Status::kInvalidArgument, "expected " + std::to_string(expected) + " losses for " + std::to_string(n) +
                                       " directions, got shape " + shape_text(losses.size()));
  }
  std::vector<double> coefficients(static_cast<size_t>(n));
  for (size_t i = 0; i < coefficients.size(); ++i) {
    coefficients[i] = two_sided ? (losses[i] - losses[coefficients.size() + i]) / (2.0 * mu)
                                : (losses[i + 1] - losses[0]) / mu;
  }
  return coefficients;
}

std::vector<double> estimate_gradient(const std::vector<double>& coefficients, const std::vector<double>& directions,
                                      int n, int d_eff, bool dim_scale) {
  const size_t d = directions.size() / static_cast<size_t>(n);
  const double scale = dim_scale ? n * std::sqrt(static_cast<double>(d_eff + n - 1) / n) : static_cast<double>(n);
  std::vector<double> gradient(d, 0.0);
  for (size_t j = 0; j < d; ++j) {
    double sum = 0.0;
    for (size_t i = 0; i < static_cast<size_t>(n); ++i) sum += coefficients[i] * directions[i * d + j];
    gradient[j] = sum / scale;
  }
  return gradient;
}

std::vector<double> word_direction_basis(const std::vector<float>& embeddings, int count, int width) {
  if (count >= width || count < 2) return {};
  const size_t k = static_cast<size_t>(count), d = static_cast<size_t>(width);
  auto dot = [d](const double* a, const double* b) {
    double total = 0.0;
    for (size_t j = 0; j < d; ++j) total += a[j] * b[j];
    return total;
  };
  std::vector<double> mean(d, 0.0);
  for (size_t r = 0; r < k; ++r)
    for (size_t j = 0; j < d; ++j) mean[j] += static_cast<double>(embeddings[r * d + j]);
  std::vector<double> basis;  // rows, modified Gram-Schmidt in vocabulary order (runtime/zo.py)
  std::vector<double> row(d);
  for (size_t r = 0; r < k; ++r) {
    for (size_t j = 0; j < d; ++j) row[j] = static_cast<double>(embeddings[r * d + j]) - mean[j] / static_cast<double>(count);
    const double norm0 = std::sqrt(dot(row.data(), row.data()));
    for (size_t q = 0; q < basis.size() / d; ++q) {
      const double* b = &basis[q * d];
      const double along = dot(row.data(), b);
      for (size_t j = 0; j < d; ++j) row[j] = row[j] - along * b[j];
    }
    const double norm = std::sqrt(dot(row.data(), row.data()));
    if (norm > 1e-9 * norm0)
      for (size_t j = 0; j < d; ++j) basis.push_back(row[j] / norm);
  }
  return basis;
}

std::vector<double> basis_directions(const std::vector<double>& z, int n, const std::vector<double>& basis, int k,
                                     int d) {
  std::vector<double> u(static_cast<size_t>(n) * d, 0.0);
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < d; ++c)
        u[static_cast<size_t>(i) * d + c] += z[static_cast<size_t>(i) * k + j] * basis[static_cast<size_t>(j) * d + c];
  return u;
}

RgeResult rge_gradient(const std::vector<double>& losses, const std::vector<double>& directions, int n, double mu,
                       int d_eff, bool dim_scale) {
  RgeResult result;
  result.coefficients = directional_coefficients(losses, n, mu, false);
  result.gradient = estimate_gradient(result.coefficients, directions, n, d_eff, dim_scale);
  return result;
}

ThinSvd thin_svd(const std::vector<double>& matrix, int rows, int cols) {
  ThinSvd svd;
  svd.count = std::min(rows, cols);
  std::vector<double> vectors, companions;
  if (rows <= cols) {
    // Orthogonalize the rows: A = W Σ Vᵀ with W orthogonal turns into rows σ_i v_iᵀ. Rotating the short side
    // keeps the work at rows² · cols and needs no cols x cols matrix.
    vectors = matrix;
    orthogonalize(vectors, rows, cols, companions, 0);
  } else {
    // Few columns: orthogonalize them (A V = U Σ) and carry V along; v_i is row i of the companions.
    vectors.resize(matrix.size());
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) vectors[static_cast<size_t>(c) * rows + r] = matrix[static_cast<size_t>(r) * cols + c];
    }
    companions.assign(static_cast<size_t>(cols) * cols, 0.0);
    for (int c = 0; c < cols; ++c) companions[static_cast<size_t>(c) * cols + c] = 1.0;
    orthogonalize(vectors, cols, rows, companions, cols);
  }
  const int length = rows <= cols ? cols : rows;
  std::vector<double> norms(static_cast<size_t>(svd.count), 0.0);  // σ_i = ‖vector i‖
  for (size_t i = 0; i < norms.size(); ++i) {
    for (size_t e = 0; e < static_cast<size_t>(length); ++e) norms[i] += vectors[i * length + e] * vectors[i * length + e];
    norms[i] = std::sqrt(norms[i]);
  }
  std::vector<int> order(static_cast<size_t>(svd.count));
  for (int i = 0; i < svd.count; ++i) order[static_cast<size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&norms](int a, int b) { return norms[a] > norms[b]; });

  svd.singular_values.resize(static_cast<size_t>(svd.count));
  svd.right_vectors.assign(static_cast<size_t>(svd.count) * cols, 0.0);
  for (int rank = 0; rank < svd.count; ++rank) {
    const int source = order[static_cast<size_t>(rank)];
    const double sigma = norms[static_cast<size_t>(source)];
    svd.singular_values[static_cast<size_t>(rank)] = sigma;
    double* out = &svd.right_vectors[static_cast<size_t>(rank) * cols];
    if (rows <= cols) {
      if (sigma > 0.0) {
        for (int c = 0; c < cols; ++c) out[c] = vectors[static_cast<size_t>(source) * cols + c] / sigma;
      }
    } else {
      for (int c = 0; c < cols; ++c) out[c] = companions[static_cast<size_t>(source) * cols + c];
    }
  }
  return svd;
}

SubspaceGradient::SubspaceGradient(int dim, int tau, double nu, bool standardize)
    : dim_(dim), tau_(tau), nu_(nu), standardize_(standardize), buffer_(static_cast<size_t>(tau) * dim, 0.0) {}

std::vector<double> SubspaceGradient::project(const std::vector<double>& g) const {
  if (k_ == 0) return g;
  const size_t d = static_cast<size_t>(dim_);
  // g − (g Pᵀ) P, as numpy evaluates it: the coordinates along P, then their combination, then the difference.
  std::vector<double> along(static_cast<size_t>(k_), 0.0);
  for (size_t i = 0; i < along.size(); ++i) {
    for (size_t j = 0; j < d; ++j) along[i] += g[j] * P_[i * d + j];
  }
  std::vector<double> removed(d, 0.0);
  for (size_t i = 0; i < along.size(); ++i) {
    for (size_t j = 0; j < d; ++j) removed[j] += along[i] * P_[i * d + j];
  }
  std::vector<double> out(d);
  for (size_t j = 0; j < d; ++j) out[j] = g[j] - removed[j];
  return out;
}

bool SubspaceGradient::push(const std::vector<double>& theta, int64_t step) {
  const size_t slot = static_cast<size_t>((step - 1) % tau_);
  std::copy(theta.begin(), theta.end(), buffer_.begin() + static_cast<std::ptrdiff_t>(slot * dim_));
  index_ = static_cast<int>(step % tau_);
  return step % tau_ == 0 && refresh();
}

bool SubspaceGradient::refresh() {
  const size_t tau = static_cast<size_t>(tau_), d = static_cast<size_t>(dim_);
  const std::vector<double>& b = buffer_;
  std::vector<bool> constant(d, true);
  bool all_constant = true;
  for (size_t j = 0; j < d; ++j) {
    for (size_t r = 1; r < tau && constant[j]; ++r) constant[j] = b[r * d + j] == b[j];
    all_constant = all_constant && constant[j];
  }
  if (all_constant) return false;

  std::vector<double> mean(d, 0.0);
  for (size_t r = 0; r < tau; ++r) {
    for (size_t j = 0; j < d; ++j) mean[j] += b[r * d + j];
  }
  for (size_t j = 0; j < d; ++j) mean[j] /= static_cast<double>(tau);
  std::vector<double> z(tau * d);
  for (size_t r = 0; r < tau; ++r) {
    for (size_t j = 0; j < d; ++j) {
      // A constant column must stay exactly zero: its mean can round, and dividing that rounding error by an
      // equally tiny std would invent unit-variance noise. Zero spread gets scale 1, as in sklearn.
      z[r * d + j] = constant[j] ? 0.0 : b[r * d + j] - mean[j];
    }
  }
  if (standardize_) {
    // Population std of each column, computed as numpy's z.std(axis=0): mean, squared deviations, mean, sqrt.
    std::vector<double> column_mean(d, 0.0), spread(d, 0.0);
    for (size_t r = 0; r < tau; ++r) {
      for (size_t j = 0; j < d; ++j) column_mean[j] += z[r * d + j];
    }
    for (size_t j = 0; j < d; ++j) column_mean[j] /= static_cast<double>(tau);
    for (size_t r = 0; r < tau; ++r) {
      for (size_t j = 0; j < d; ++j) {
        const double deviation = z[r * d + j] - column_mean[j];
        spread[j] += deviation * deviation;
      }
    }
    for (size_t j = 0; j < d; ++j) spread[j] = constant[j] ? 1.0 : std::sqrt(spread[j] / static_cast<double>(tau));
    for (size_t r = 0; r < tau; ++r) {
      for (size_t j = 0; j < d; ++j) z[r * d + j] /= spread[j];
    }
  }

  const ThinSvd svd = thin_svd(z, tau_, dim_);
  const size_t count = static_cast<size_t>(svd.count);
  std::vector<double> cumulative(count);
  double total = 0.0;
  for (size_t i = 0; i < count; ++i) {
    total += svd.singular_values[i] * svd.singular_values[i];
    cumulative[i] = total;
  }
  // i* = smallest 0-based index with cumulative[i*] / total > 1 − ν; the min() only guards the last entry's rounding.
  size_t i_star = 0;
  while (i_star < count && cumulative[i_star] / total <= 1.0 - nu_) ++i_star;
  i_star = std::min(i_star, count - 1);
  // Components with a numerically zero singular value are left out of P (numpy's matrix_rank tolerance): the centred
  // buffer has rank <= tau - 1, and its null directions are arbitrary, decided by rounding. Removing one of them
  // carries no information; leaving them out makes P a property of the trajectory alone (see runtime/zo.py).
  const double tolerance = svd.singular_values[0] * static_cast<double>(std::max(tau, d)) * DBL_EPSILON;
  size_t rank = 0;
  for (double sigma : svd.singular_values) rank += sigma > tolerance ? 1 : 0;
  rank = std::min(rank, tau - 1);  // centring takes one dimension exactly, whatever the last sigma's rounding
  const size_t first = i_star + 1;
  k_ = rank > first ? static_cast<int>(rank - first) : 0;
  P_.assign(svd.right_vectors.begin() + static_cast<std::ptrdiff_t>(first * d),
            svd.right_vectors.begin() + static_cast<std::ptrdiff_t>((first + static_cast<size_t>(k_)) * d));
  return true;
}

void SubspaceGradient::restore(std::vector<double> buffer, int index, std::vector<double> P, int k) {
  buffer_ = std::move(buffer);
  index_ = index;
  P_ = std::move(P);
  k_ = k;
}

ZOAdam::ZOAdam(int dim, double lr, double beta1, double beta2, double eps)
    : m(static_cast<size_t>(dim), 0.0), v(static_cast<size_t>(dim), 0.0), lr_(lr), beta1_(beta1), beta2_(beta2),
      eps_(eps) {}

std::vector<double> ZOAdam::step(const std::vector<double>& theta, const std::vector<double>& g, int64_t s,
                                 double lr) {
  const double rate = lr < 0.0 ? lr_ : lr;
  // numpy's evaluation order: (1 − β2)·g·g is ((1 − β2)·g)·g, and lr·m̂ is formed before the division.
  const double correction1 = 1.0 - std::pow(beta1_, static_cast<double>(s));
  const double correction2 = 1.0 - std::pow(beta2_, static_cast<double>(s));
  std::vector<double> out(theta.size());
  for (size_t j = 0; j < theta.size(); ++j) {
    m[j] = beta1_ * m[j] + (1.0 - beta1_) * g[j];
    v[j] = beta2_ * v[j] + (1.0 - beta2_) * g[j] * g[j];
    const double m_hat = m[j] / correction1;
    const double v_hat = v[j] / correction2;
    out[j] = theta[j] - rate * m_hat / (std::sqrt(v_hat) + eps_);
  }
  return out;
}

// ---- the trainer ------------------------------------------------------------------------------------------------

ZOTrainer::ZOTrainer(ZOProblem& problem, const ZOConfig& config, const std::vector<double>& theta0)
    : problem_(problem),
      config_(validated(config)),
      dim_(checked_dim(problem.dim(), theta0)),
      t_range_(config_.timestep_range(problem.num_timesteps())),
      theta_(theta0),
      adam_(dim_, config_.lr, config_.beta1, config_.beta2, config_.adam_eps),
      sg_(config_.sg ? std::make_unique<SubspaceGradient>(dim_, config_.sg_tau, config_.sg_nu, config_.sg_standardize)
                     : nullptr),
      rng_(static_cast<uint64_t>(config_.seed)) {
  if (config_.word_directions) {
    std::vector<double> basis = problem.direction_basis();
    const int rows = static_cast<int>(basis.size() / static_cast<size_t>(dim_));
    if (rows > 0 && rows < dim_ && basis.size() == static_cast<size_t>(rows) * dim_) {
      basis_ = std::move(basis);
      basis_rows_ = rows;
    }
  }
}

const std::vector<double>& ZOTrainer::sg_P() const {
  static const std::vector<double> none;
  return sg_ ? sg_->P() : none;
}

std::vector<float> ZOTrainer::token() const {
  std::vector<float> out(theta_.size());
  for (size_t j = 0; j < theta_.size(); ++j) out[j] = static_cast<float>(theta_[j]);
  return out;
}

StepLog ZOTrainer::step() {
  const auto start = std::chrono::steady_clock::now();
  const int n = config_.n;
  s_ += 1;
  // the first sample, the directions every sample of the step shares, then the further samples (runtime/zo.py)
  problem_.draw(rng_, t_range_.first, t_range_.second);
  std::vector<double> u(static_cast<size_t>(n) * static_cast<size_t>(basis_rows_ > 0 ? basis_rows_ : dim_));
  rng_.standard_normal(u.data(), u.size());
  if (basis_rows_ > 0) u = basis_directions(u, n, basis_, basis_rows_, dim_);
  const std::vector<float> batch = perturbed_batch(theta_, u, n, config_.mu, config_.two_sided);
  std::vector<double> coefficients(static_cast<size_t>(n), 0.0);
  double loss = 0.0;
  for (int draw = 0; draw < config_.draws; ++draw) {
    if (draw > 0) problem_.draw(rng_, t_range_.first, t_range_.second);
    const std::vector<double> losses = checked_losses(problem_, batch, config_.queries(), s_);
    const std::vector<double> slopes = directional_coefficients(losses, n, config_.mu, config_.two_sided);
    for (size_t i = 0; i < coefficients.size(); ++i) coefficients[i] += slopes[i];
    if (config_.two_sided) {
      double total = 0.0;  // the mean of the rows, summed in row order
      for (double value : losses) total += value;
      loss += total / static_cast<double>(losses.size());
    } else {
      loss += losses[0];
    }
  }
  for (double& c : coefficients) c /= static_cast<double>(config_.draws);
  loss /= static_cast<double>(config_.draws);
  const int k = sg_ ? sg_->k() : 0;
  const int span = basis_rows_ > 0 ? basis_rows_ : dim_;  // the dimension the directions explore
  const std::vector<double> estimate = estimate_gradient(coefficients, u, n, std::max(1, span - k), config_.dim_scale);
  StepLog log;
  log.grad_norm = norm(estimate);
  const std::vector<double> g = sg_ ? sg_->project(estimate) : estimate;  // before the moments (§4)
  theta_ = adam_.step(theta_, g, s_, config_.lr_at(s_));
  if (sg_) sg_->push(theta_, s_);
  log.step = s_;
  log.loss = loss;
  log.coefficients = std::move(coefficients);
  log.grad_norm_projected = norm(g);
  log.k = k;
  log.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return log;
}

std::vector<StepLog> ZOTrainer::run(int64_t steps, const std::string& checkpoint_path,
                                    const std::function<bool(const StepLog&)>& on_step, double time_budget_s) {
  if (steps < 0) fail(Status::kInvalidArgument, "steps must be >= 0, got " + std::to_string(steps));
  const auto started = std::chrono::steady_clock::now();
  std::vector<StepLog> logs;
  while (s_ < steps) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (time_budget_s >= 0.0 && elapsed >= time_budget_s) break;
    logs.push_back(step());
    if (!checkpoint_path.empty() && s_ % config_.checkpoint_every == 0) save(checkpoint_path);
    if (on_step && !on_step(logs.back())) break;  // cancelled: checkpoint below, then return
  }
  if (!checkpoint_path.empty() && saved_step_ != s_) save(checkpoint_path);
  return logs;
}

void ZOTrainer::save(const std::string& path) const {
  const int64_t d = dim_;
  SafeTensorsFile file;
  file.tensors["theta"] = f64_tensor(theta_, {d});
  file.tensors["m"] = f64_tensor(adam_.m, {d});
  file.tensors["v"] = f64_tensor(adam_.v, {d});
  file.tensors["sg_buffer"] = sg_ ? f64_tensor(sg_->buffer(), {sg_->tau(), d}) : f64_tensor({}, {0, d});
  file.tensors["sg_P"] = sg_ ? f64_tensor(sg_->P(), {sg_->k(), d}) : f64_tensor({}, {0, d});
  file.tensors["step"] = i64_tensor({s_}, {1});
  file.tensors["sg_index"] = i64_tensor({sg_ ? sg_->index() : 0}, {1});
  file.tensors["t_range"] = i64_tensor({t_range_.first, t_range_.second}, {2});
  file.metadata["format"] = kCheckpointFormat;
  file.metadata["config"] = config_.to_json();
  file.metadata["rng"] = NumpyGenerator::state_to_json(rng_.state());
  write_safetensors(path, file);
  saved_step_ = s_;
}

namespace {

SafeTensorsFile load_checkpoint(const std::string& path) {
  if (!std::ifstream(path, std::ios::binary)) fail(Status::kCheckpointInvalid, "checkpoint " + path + " does not exist");
  SafeTensorsFile file = read_safetensors(path, Status::kCheckpointInvalid, "readable ZO checkpoint");
  std::string missing;
  for (const char* key : {"theta", "m", "v", "sg_buffer", "sg_P", "step", "sg_index", "t_range"}) {
    if (!file.tensors.count(key)) missing += (missing.empty() ? "" : ", ") + std::string(key);
  }
  for (const char* key : {"format", "config", "rng"}) {
    if (!file.metadata.count(key)) missing += (missing.empty() ? "" : ", ") + std::string(key);
  }
  if (!missing.empty()) fail(Status::kCheckpointInvalid, "checkpoint " + path + " is incomplete (missing " + missing + ")");
  if (file.metadata["format"] != kCheckpointFormat) {
    fail(Status::kCheckpointInvalid, "checkpoint " + path + " has format " + file.metadata["format"] + ", expected " +
                                         kCheckpointFormat);
  }
  return file;
}

// A tensor's float64 values, which must have exactly `shape`; throws Failure naming the tensor otherwise.
std::vector<double> f64_with_shape(const SafeTensorsFile& file, const std::string& name, std::vector<int64_t> shape) {
  const SafeTensor& tensor = file.tensors.at(name);
  if (tensor.shape != shape) {
    std::string expected, got;
    for (int64_t dim : shape) expected += (expected.empty() ? "" : ", ") + std::to_string(dim);
    for (int64_t dim : tensor.shape) got += (got.empty() ? "" : ", ") + std::to_string(dim);
    fail(Status::kInvalidArgument, name + ": expected shape (" + expected + "), got (" + got + ")");
  }
  return f64_values(tensor);
}

std::vector<int64_t> i64_with_size(const SafeTensorsFile& file, const std::string& name, size_t size) {
  std::vector<int64_t> values = i64_values(file.tensors.at(name));
  if (values.size() != size) fail(Status::kInvalidArgument, name + ": expected " + std::to_string(size) + " values");
  return values;
}

}  // namespace

std::unique_ptr<ZOTrainer> ZOTrainer::resume(const std::string& path, ZOProblem& problem, const ZOConfig& config) {
  config.validate();
  SafeTensorsFile file = load_checkpoint(path);
  const std::string corrupt = "checkpoint " + path + " is corrupt: ";

  // Settings that change the trajectory must match; the run length and checkpoint period may differ.
  json::Value saved, current = json::parse(config.to_json(), "config");
  try {
    saved = json::parse(file.metadata["config"], "config");
    if (!saved.is_object()) fail(Status::kInvalidArgument, "config is not a JSON object");
  } catch (const Failure& e) {
    fail(Status::kCheckpointInvalid, corrupt + e.what());
  }
  std::set<std::string> keys;
  for (const auto& member : saved.as_object()) keys.insert(member.first);
  for (const auto& member : current.as_object()) keys.insert(member.first);
  std::string changed;
  for (const std::string& key : keys) {
    if (key == "steps" || key == "checkpoint_every") continue;
    if (!same_value(saved.find(key), current.find(key))) {
      changed += (changed.empty() ? "" : "; ") + key + ": " + value_repr(key, saved.find(key)) + " -> " +
                 value_repr(key, current.find(key));
    }
  }
  const SafeTensor& theta_tensor = file.tensors.at("theta");
  const int64_t saved_dim = theta_tensor.shape.size() == 1 ? theta_tensor.shape[0] : -1;
  if (saved_dim != problem.dim()) {
    changed += (changed.empty() ? "" : "; ") + std::string("dim: ") + std::to_string(saved_dim) + " -> " +
               std::to_string(problem.dim());
  }
  if (!changed.empty()) {
    fail(Status::kCheckpointInvalid, "checkpoint " + path + " was made with other settings (" + changed + ")");
  }

  std::unique_ptr<ZOTrainer> trainer;
  try {
    const int64_t d = problem.dim();
    trainer = std::make_unique<ZOTrainer>(problem, config, f64_with_shape(file, "theta", {d}));
    const std::vector<int64_t> t_range = i64_with_size(file, "t_range", 2);
    if (t_range[0] != trainer->t_range_.first || t_range[1] != trainer->t_range_.second) {
      fail(Status::kCheckpointInvalid, "checkpoint " + path + " used timesteps (" + std::to_string(t_range[0]) +
                                           ", " + std::to_string(t_range[1]) + "), now (" +
                                           std::to_string(trainer->t_range_.first) + ", " +
                                           std::to_string(trainer->t_range_.second) + ")");
    }
    trainer->adam_.m = f64_with_shape(file, "m", {d});
    trainer->adam_.v = f64_with_shape(file, "v", {d});
    const int64_t step = i64_with_size(file, "step", 1)[0];
    if (step < 0) fail(Status::kInvalidArgument, "negative step " + std::to_string(step));
    // a run of `steps` never saves a later step: such a checkpoint is another run's or forged, and resuming it would
    // write its θ as this run's result without a single step
    if (step > config.steps) {
      fail(Status::kCheckpointInvalid, "checkpoint " + path + " is at step " + std::to_string(step) +
                                           ", beyond this run's " + std::to_string(config.steps) +
                                           " steps; resume with at least that many --steps, or pass "
                                           "--overwrite to start over");
    }
    trainer->s_ = step;
    if (trainer->sg_) {
      const int tau = config.sg_tau;
      std::vector<double> buffer = f64_with_shape(file, "sg_buffer", {tau, d});
      const int64_t index = i64_with_size(file, "sg_index", 1)[0];
      if (index < 0 || index >= tau) fail(Status::kInvalidArgument, "sg_index " + std::to_string(index) + " is outside [0, tau)");
      const SafeTensor& p = file.tensors.at("sg_P");
      if (p.shape.size() != 2 || p.shape[1] != d || p.shape[0] > std::min<int64_t>(tau, d)) {
        fail(Status::kInvalidArgument, "P has an invalid shape");
      }
      const int64_t k = p.shape[0];
      trainer->sg_->restore(std::move(buffer), static_cast<int>(index), f64_with_shape(file, "sg_P", {k, d}),
                            static_cast<int>(k));
    }
    trainer->rng_.set_state(NumpyGenerator::state_from_json(file.metadata["rng"]));
  } catch (const Failure& e) {
    if (e.status() == Status::kCheckpointInvalid) throw;
    fail(Status::kCheckpointInvalid, corrupt + e.what());
  }
  trainer->saved_step_ = trainer->s_;
  return trainer;
}

int64_t ZOTrainer::checkpoint_step(const std::string& path) {
  if (!std::ifstream(path, std::ios::binary)) return 0;
  try {
    return i64_with_size(load_checkpoint(path), "step", 1)[0];
  } catch (const Failure& e) {
    if (e.status() == Status::kCheckpointInvalid) throw;
    fail(Status::kCheckpointInvalid, "checkpoint " + path + " is corrupt: " + e.what());
  }
}

}  // namespace edgesdk
