// ExecuTorch sessions against the Python runtime's: for every case cpp_fixtures.py recorded (each component of
// each exported bundle at batches 1, 2, 3 and 5), the same inputs must give the same outputs.
#include <cmath>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "check.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "json.hpp"
#include "npy.hpp"
#include "session.hpp"

using edgesdk::Bundle;
using edgesdk::Session;
using edgesdk::SessionOptions;
using edgesdk::Status;
using edgesdk::Tensor;
namespace json = edgesdk::json;

namespace {

const std::string kTinySd = "bundles/tiny-sd/tiny-sd.edge";

Tensor load_tensor(const std::string& relative) {
  edgesdk::NpyArray array = edgesdk::read_npy(check::fixture(relative));
  return {array.shape, array.to_float32()};
}

json::Value cases() {
  std::vector<uint8_t> text = edgesdk::read_file_bytes(check::fixture("session/cases.json"));
  return json::parse(std::string(text.begin(), text.end()), "cases.json");
}

// Largest |got - want| / max(1, |want|), or infinity for a shape mismatch.
double relative_error(const Tensor& got, const Tensor& want) {
  if (got.shape != want.shape || got.data.size() != want.data.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < got.data.size(); ++i) {
    double e = std::fabs(double(got.data[i]) - want.data[i]) / std::max(1.0, std::fabs(double(want.data[i])));
    if (!(e <= worst)) worst = e;  // NaN counts as the worst
  }
  return worst;
}

std::vector<Tensor> unet_inputs(int64_t batch) {
  return {Tensor{{batch, 4, 8, 8}, std::vector<float>(size_t(batch) * 256, 0.1f)},
          Tensor{{batch}, std::vector<float>(size_t(batch), 500.0f)},
          Tensor{{batch, 16, 128}, std::vector<float>(size_t(batch) * 2048, 0.01f)}};
}

template <typename Call>
std::string error_of(Call call) {
  try {
    call();
  } catch (const edgesdk::Failure& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("every recorded case: the same outputs as the Python ExecuTorch session (1e-5 relative)") {
  json::Value all = cases();
  CHECK(all.size() >= 16);
  std::string open_bundle, open_component;
  std::unique_ptr<Bundle> bundle;
  std::unique_ptr<Session> session;
  for (const json::Value& c : all.as_array()) {
    std::string bundle_path = c.at("bundle").as_string(), component = c.at("component").as_string();
    if (bundle_path != open_bundle) {
      session.reset();
      bundle = std::make_unique<Bundle>(Bundle::open(check::fixture(bundle_path)));
      open_bundle = bundle_path;
      open_component.clear();
    }
    if (component != open_component) {
      session = Session::open(*bundle, component);
      open_component = component;
    }
    std::vector<Tensor> inputs;
    for (const json::Value& file : c.at("inputs").as_array()) inputs.push_back(load_tensor("session/" + file.as_string()));
    std::vector<Tensor> outputs = session->run(inputs);
    const auto& expected = c.at("outputs").as_array();
    CHECK_EQ(outputs.size(), expected.size());
    for (size_t i = 0; i < outputs.size() && i < expected.size(); ++i) {
      double error = relative_error(outputs[i], load_tensor("session/" + expected[i].as_string()));
      if (!(error <= 1e-5)) {
        check::report(__FILE__, __LINE__, component + " batch " + std::to_string(c.at("batch").as_int()) +
                                              ": relative error " + std::to_string(error));
      }
    }
  }
}

TEST_CASE("names, methods: forward at open, forward_b3 on first use, nothing at open when lean") {
  Bundle bundle = Bundle::open(check::fixture(kTinySd), false);
  auto session = Session::open(bundle, "unet");
  CHECK((session->input_names() == std::vector<std::string>{"latent", "timestep", "text"}));
  CHECK((session->output_names() == std::vector<std::string>{"noise"}));
  CHECK((session->exact_batches() == std::vector<int64_t>{2, 3}));
  CHECK((session->loaded_methods() == std::vector<std::string>{"forward"}));
  session->run(unet_inputs(5));  // chunks of 2 through forward
  CHECK((session->loaded_methods() == std::vector<std::string>{"forward"}));
  session->run(unet_inputs(3));
  CHECK((session->loaded_methods() == std::vector<std::string>{"forward", "forward_b3"}));

  SessionOptions lean;
  lean.lean_memory = true;
  auto lean_session = Session::open(bundle, "unet", lean);
  CHECK(lean_session->loaded_methods().empty());
  std::vector<Tensor> a = lean_session->run(unet_inputs(1));
  CHECK((lean_session->loaded_methods() == std::vector<std::string>{"forward"}));
  std::vector<Tensor> b = session->run(unet_inputs(1));
  CHECK_EQ(relative_error(a[0], b[0]), 0.0);  // mmap or file loader: the same program, the same numbers
  CHECK((a[0].shape == std::vector<int64_t>{1, 4, 8, 8}));
}

TEST_CASE("padding rows never leak into real rows") {
  Bundle bundle = Bundle::open(check::fixture(kTinySd), false);
  auto session = Session::open(bundle, "unet");
  std::vector<Tensor> five = unet_inputs(5);
  for (size_t i = 0; i < five[0].data.size(); ++i) five[0].data[i] = float(i % 97) / 50.0f - 1.0f;
  std::vector<Tensor> all = session->run(five);
  CHECK((all[0].shape == std::vector<int64_t>{5, 4, 8, 8}));
  // row 4 alone (batch 1, padded) must equal row 4 of the batch of 5 (the padded last chunk)
  std::vector<Tensor> last = unet_inputs(1);
  last[0].data.assign(five[0].data.end() - 256, five[0].data.end());
  std::vector<Tensor> alone = session->run(last);
  Tensor row4{{1, 4, 8, 8}, std::vector<float>(all[0].data.end() - 256, all[0].data.end())};
  CHECK_EQ(relative_error(alone[0], row4), 0.0);
}

TEST_CASE("wrong inputs are kInvalidArgument naming the input") {
  Bundle bundle = Bundle::open(check::fixture(kTinySd), false);
  auto session = Session::open(bundle, "unet");
  std::vector<Tensor> inputs = unet_inputs(2);
  inputs.pop_back();
  CHECK_THROWS_STATUS(session->run(inputs), Status::kInvalidArgument);
  CHECK(error_of([&] { session->run(inputs); }).find("needs 3 inputs (latent, timestep, text); got 2") !=
        std::string::npos);
  inputs = unet_inputs(2);
  inputs[2].shape = {2, 16, 127};
  inputs[2].data.resize(2 * 16 * 127);
  std::string error = error_of([&] { session->run(inputs); });
  CHECK(error.find("input 'text' has shape (2, 16, 127); it takes (batch, 16, 128)") != std::string::npos);
  inputs = unet_inputs(2);
  inputs[0].data.pop_back();
  CHECK(error_of([&] { session->run(inputs); }).find("input 'latent' has 511 values") != std::string::npos);
  inputs = unet_inputs(2);
  inputs[1] = Tensor{{3}, {1, 2, 3}};
  CHECK(error_of([&] { session->run(inputs); }).find("inputs disagree on batch size: [2, 3]") != std::string::npos);
  CHECK_THROWS_STATUS(session->run(unet_inputs(0)), Status::kInvalidArgument);
}

TEST_CASE("threads: set while no session is open; another count is refused while one is") {
  Bundle bundle = Bundle::open(check::fixture(kTinySd), false);
  SessionOptions two;
  two.threads = 2;
  std::vector<Tensor> reference;
  {
    auto session = Session::open(bundle, "unet", two);
    reference = session->run(unet_inputs(2));
    SessionOptions one;
    one.threads = 1;
    CHECK_THROWS_STATUS(Session::open(bundle, "unet", one), Status::kInvalidArgument);
    auto same = Session::open(bundle, "vae_decoder", two);  // the same count is fine
  }
  SessionOptions one;
  one.threads = 1;
  auto single = Session::open(bundle, "unet", one);  // all closed: the pool may change
  CHECK(relative_error(single->run(unet_inputs(2))[0], reference[0]) <= 1e-5);
}

TEST_CASE("a binary network's .pte.1bit program runs from its unpacked bytes, also lean") {
  Bundle bnn = Bundle::open(check::fixture("bundles/bnn/bnn.edge"));
  const std::string& file = bnn.component("classifier").files.at("executorch");
  CHECK(file.size() > 5 && file.compare(file.size() - 5, 5, ".1bit") == 0);
  SessionOptions lean;
  lean.lean_memory = true;
  for (const SessionOptions& options : {SessionOptions{}, lean}) {
    auto session = Session::open(bnn, "classifier", options);
    std::vector<Tensor> outputs = session->run({Tensor{{3, 1, 8, 8}, std::vector<float>(3 * 64, 0.5f)}});
    CHECK((outputs.at(0).shape == std::vector<int64_t>{3, 10}));
  }
}

TEST_CASE("bundles without an executorch file, and corrupt programs") {
  Bundle good = Bundle::open(check::fixture("bundles/bad/good.edge"));
  CHECK_THROWS_STATUS(Session::open(good, "net"), Status::kBundleUnsupported);
  CHECK(error_of([&] { Session::open(good, "net"); }).find("re-export with --target executorch") != std::string::npos);
  Bundle bundle = Bundle::open(check::fixture(kTinySd), false);
  CHECK_THROWS_STATUS(Session::open(bundle, "classifier"), Status::kBundleUnsupported);
  // the program with a flipped byte, opened without checksums: ExecuTorch refuses it, or it runs
  Bundle corrupt = Bundle::open(check::fixture("bundles/bad/corrupt.edge"), false);
  std::string error = error_of([&] {
    auto s = Session::open(corrupt, "vae_encoder");
    s->run({Tensor{{2, 3, 32, 32}, std::vector<float>(2 * 3 * 32 * 32, 0.0f)}});
  });
  CHECK(error.empty() || error.find("vae_encoder: ExecuTorch error 0x") == 0);
}

TEST_MAIN()
