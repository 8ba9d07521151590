// A tiny test harness (no dependency): CHECK macros and a runner. Each tests/test_*.cpp is one ctest executable;
// it exits non-zero if any check failed. Tests that need a fixture read paths from the environment
// (EDGESDK_CPP_FIXTURES: the folder tests/cpp_fixtures.py writes) and fail, never skip silently, when it is absent.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> body;
};

inline std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}
inline int& failures() {
  static int count = 0;
  return count;
}

struct Register {
  Register(const char* name, std::function<void()> body) { cases().push_back({name, std::move(body)}); }
};

inline void report(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
  ++failures();
}

inline std::string fixture(const std::string& relative) {
  const char* root = std::getenv("EDGESDK_CPP_FIXTURES");
  if (root == nullptr || *root == '\0') {
    std::fprintf(stderr, "EDGESDK_CPP_FIXTURES is not set: run the ctest fixture step (tests/cpp_fixtures.py)\n");
    std::exit(1);
  }
  return std::string(root) + "/" + relative;
}

inline int run_all() {
  for (const auto& c : cases()) {
    int before = failures();
    try {
      c.body();
    } catch (const std::exception& e) {
      report(c.name, 0, std::string("uncaught exception: ") + e.what());
    }
    std::fprintf(stderr, "%s %s\n", failures() == before ? "ok  " : "FAIL", c.name);
  }
  std::fprintf(stderr, "%zu cases, %d failed checks\n", cases().size(), failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CONCAT2(a, b) a##b
#define CHECK_CONCAT(a, b) CHECK_CONCAT2(a, b)
#define TEST_CASE(name)                                                                          \
  static void CHECK_CONCAT(test_body_, __LINE__)();                                              \
  static check::Register CHECK_CONCAT(test_reg_, __LINE__)(name, CHECK_CONCAT(test_body_, __LINE__)); \
  static void CHECK_CONCAT(test_body_, __LINE__)()
#define CHECK(cond) \
  do { if (!(cond)) check::report(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ(a, b)                                                                             \
  do { if (!((a) == (b))) check::report(__FILE__, __LINE__, std::string(#a " == " #b)); } while (0)
#define CHECK_NEAR(a, b, tol)                                                                      \
  do {                                                                                             \
    double check_a_ = (a), check_b_ = (b);                                                         \
    if (!(std::fabs(check_a_ - check_b_) <= (tol)))                                                \
      check::report(__FILE__, __LINE__, std::string(#a " ~ " #b ": ") + std::to_string(check_a_) + \
                                            " vs " + std::to_string(check_b_));                    \
  } while (0)
// (the parameter is not called `status`: the preprocessor would also replace check_e_.status())
#define CHECK_THROWS_STATUS(expr, expected_status)                                                 \
  do {                                                                                             \
    bool check_thrown_ = false;                                                                    \
    try { (void)(expr); } catch (const edgesdk::Failure& check_e_) {                               \
      check_thrown_ = true;                                                                        \
      if (check_e_.status() != (expected_status))                                                  \
        check::report(__FILE__, __LINE__, std::string(#expr " threw another status: ") + check_e_.what()); \
    }                                                                                              \
    if (!check_thrown_) check::report(__FILE__, __LINE__, std::string(#expr " did not throw"));  \
  } while (0)
// Expects `expr` to throw edgesdk::Failure with `expected` status and a message containing `text`.
#define CHECK_FAILS(expr, expected, text)                                                                 \
  do {                                                                                                    \
    bool thrown_ = false;                                                                                 \
    try { (void)(expr); } catch (const edgesdk::Failure& e_) {                                            \
      thrown_ = true;                                                                                     \
      if (e_.status() != (expected) || std::string(e_.what()).find(text) == std::string::npos)            \
        check::report(__FILE__, __LINE__, std::string(#expr ": ") + e_.what());                           \
    }                                                                                                     \
    if (!thrown_) check::report(__FILE__, __LINE__, #expr " did not throw");                              \
  } while (0)
#define TEST_MAIN() \
  int main() { return check::run_all(); }
