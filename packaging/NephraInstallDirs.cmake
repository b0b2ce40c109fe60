# Where the packaged files go. Shared by cmake/Packaging.cmake (install rules) and tests/packaging (which
# checks the staged layout), so both read one definition.
include_guard(DIRECTORY)
include(GNUInstallDirs)

# Relative to the prefix: /usr/lib/systemd/system for the .deb, which systemd 252 (Debian 12) searches
# besides /lib/systemd/system (the same directory on merged-/usr systems). May be set to an absolute path.
set(NEPHRA_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where nephrad.service is installed (relative to CMAKE_INSTALL_PREFIX, or absolute)")
# sysusers.d and tmpfiles.d live in lib/, never in the multiarch CMAKE_INSTALL_LIBDIR.
set(NEPHRA_SYSUSERS_DIR "lib/sysusers.d")
set(NEPHRA_TMPFILES_DIR "lib/tmpfiles.d")
# GNUInstallDirs makes CMAKE_INSTALL_FULL_SYSCONFDIR "/etc" only when CMAKE_INSTALL_PREFIX is exactly "/usr"
# (or "/"); for any other prefix it is "<prefix>/etc" ("/etc/opt/..." for "/opt/..."). The .deb is therefore
# built from a tree configured with -DCMAKE_INSTALL_PREFIX=/usr; the CPack step refuses anything else.
set(NEPHRA_CONFIG_DIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/nephra")
set(NEPHRA_MODEL_DIR "${CMAKE_INSTALL_DATADIR}/nephra/models")
set(NEPHRA_DOC_DIR "${CMAKE_INSTALL_DATAROOTDIR}/doc/nephra")
