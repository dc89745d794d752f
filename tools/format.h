// How the command line shows sizes, ages and times to people.
#pragma once

#include <cstdint>
#include <string>

namespace stashfs::cli {

std::string FormatSize(uint64_t bytes);
std::string FormatAge(int64_t seconds);
std::string FormatTime(int64_t unix_seconds);

}  // namespace stashfs::cli
