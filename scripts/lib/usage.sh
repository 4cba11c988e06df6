# shellcheck shell=bash
# print_usage SCRIPT: print the comment block at the top of SCRIPT (from line 2 up to the first
# line that is not a comment), without the leading "# ". Each script's block starts "Usage:".
print_usage() {
  local line
  {
    IFS= read -r line # the #! line
    while IFS= read -r line && [ "${line:0:1}" = "#" ]; do
      line=${line#\#}
      printf '%s\n' "${line# }"
    done
  } <"$1"
}
