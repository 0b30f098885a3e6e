// Locates the shared test data (models, text, vocabularies) that lives beside
// the repository in ../shared and is never copied into it. The environment
// variable KVSTASH_SHARED_DIR overrides the location. A missing file fails the
// calling test loudly instead of skipping it.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace kvstash::testing {

inline std::string SharedDir() {
  const char* env = std::getenv("KVSTASH_SHARED_DIR");
  return env != nullptr ? std::string(env)
                        : std::string(KVSTASH_SHARED_DIR_DEFAULT);
}

// Returns the absolute path of `relative` under the shared directory and
// records a fatal-looking failure when it does not exist.
inline std::string SharedPath(const std::string& relative) {
  std::string path = SharedDir() + "/" + relative;
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "shared test data missing: " << path
                  << " (set KVSTASH_SHARED_DIR to the shared/ folder)";
  }
  return path;
}

// A fresh empty temporary directory for one test, removed with everything in
// it when the test binary exits.
inline std::string TempDir(const std::string& name) {
  struct Registry {
    std::vector<std::filesystem::path> paths;
    ~Registry() {
      std::error_code ignored;
      for (const auto& p : paths) std::filesystem::remove_all(p, ignored);
    }
  };
  static Registry registry;
  std::filesystem::path p =
      std::filesystem::temp_directory_path() /
      ("kvstash_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  registry.paths.push_back(p);
  return p.string();
}

}  // namespace kvstash::testing
