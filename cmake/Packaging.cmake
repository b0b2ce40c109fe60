# Install layout (FHS) and the Debian package. The binaries are installed by app/CMakeLists.txt.
#   cmake --preset release -DCMAKE_INSTALL_PREFIX=/usr && cmake --build --preset release --target nephrad nephra
#   (cd build/release && cpack)          -> build/release/nephra_<version>-1_<arch>.deb
# scripts/test-deb.sh does that and installs, upgrades and purges the package.
include(${PROJECT_SOURCE_DIR}/packaging/NephraInstallDirs.cmake)

install(FILES systemd/nephrad.service DESTINATION ${NEPHRA_SYSTEMD_UNIT_DIR})
install(FILES packaging/nephra.sysusers DESTINATION ${NEPHRA_SYSUSERS_DIR} RENAME nephra.conf)
install(FILES packaging/nephra.tmpfiles DESTINATION ${NEPHRA_TMPFILES_DIR} RENAME nephra.conf)
# Absolute (/etc/nephra with prefix /usr); packaging/deb/conffiles makes dpkg keep the admin's edits.
install(FILES packaging/nephra.toml DESTINATION ${NEPHRA_CONFIG_DIR})
# The manifest names its ONNX file relative to itself, so the two must stay side by side.
install(FILES models/nephra-kidney.json models/nephra-kidney.onnx models/MODEL_CARD.md
              models/training_curves.png models/confusion_matrix.png models/dicom_window.png
        DESTINATION ${NEPHRA_MODEL_DIR})
install(FILES README.md DESTINATION ${NEPHRA_DOC_DIR})
if(EXISTS ${PROJECT_SOURCE_DIR}/LICENSE)
  install(FILES LICENSE DESTINATION ${NEPHRA_DOC_DIR})
endif()
install(FILES packaging/nephrad-port104.conf packaging/grafana-dashboard.json DESTINATION ${NEPHRA_DOC_DIR}/examples)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME nephra)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Nephra")
set(CPACK_PACKAGE_CONTACT "Nephra maintainers <nephra@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Kidney-CT AI node for hospital PACS (DICOM)")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
       "Receives abdominal CT studies from an archive over DICOM, spools them durably, classifies every slice\n"
       "as Normal, Cyst, Stone or Tumor and sends a DICOM SR and heatmaps back. Runs as the systemd service\n"
       "nephrad. Research prototype, not for diagnostic use.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# RelWithDebInfo binaries are ~45 MB with their debug sections; the package does not need them.
set(CPACK_STRIP_FILES ON)
set(CPACK_NEPHRA_CONFIG_DIR "${NEPHRA_CONFIG_DIR}")
set(CPACK_PROJECT_CONFIG_FILE ${PROJECT_SOURCE_DIR}/packaging/CPackProjectConfig.cmake)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Nephra maintainers <nephra@example.org>")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# dpkg-shlibdeps (dpkg-dev) turns the binaries' shared libraries into Depends.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# postinst needs systemd-sysusers or adduser to create the account. systemd is not required: nephrad runs in
# the foreground without it (containers), and naming adduser first keeps apt from pulling systemd in there.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser | systemd")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "dcmtk")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/deb/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/deb/postinst
    ${PROJECT_SOURCE_DIR}/packaging/deb/prerm
    ${PROJECT_SOURCE_DIR}/packaging/deb/postrm)
# 0755 for the maintainer scripts and 0644 for conffiles whatever the checkout's modes are.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
