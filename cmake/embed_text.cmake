# Writes a text file into a C++ header as a raw string literal, so that a
# page (serve/dashboard.html) lives in its own source file and is compiled
# into the binary as is: nothing is escaped by hand.
#
#   cmake -DIN=page.html -DOUT=page_html.h -DNAME=kPageHtml -P embed_text.cmake
#
# The header defines `inline constexpr std::string_view NAME`. Fails when the
# text holds the literal's closing delimiter.
foreach(var IN ITEMS IN OUT NAME)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_text.cmake: -D${var}=... is required")
  endif()
endforeach()
set(delim "kvstash_embed")
file(READ "${IN}" text)
string(FIND "${text}" ")${delim}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} holds the raw string delimiter )${delim}\"")
endif()
get_filename_component(source "${IN}" NAME)
file(WRITE "${OUT}.tmp"
     "// Generated from ${source} by cmake/embed_text.cmake: do not edit.\n"
     "#pragma once\n\n#include <string_view>\n\n"
     "inline constexpr std::string_view ${NAME} = R\"${delim}(${text})${delim}\";\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
