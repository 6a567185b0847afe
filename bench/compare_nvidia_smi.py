#!/usr/bin/env python3
"""Compares `gpufleet-agent probe --json` with `nvidia-smi -q -x`, field by field.

usage: compare_nvidia_smi.py nvidia-smi.xml probe.json
Prints one line per field and GPU (ok / MISMATCH / absent) and exits 1 on any mismatch.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET


def num(text):
    m = re.search(r"-?\d+(\.\d+)?", text or "")
    return float(m.group(0)) if m else None


def main(xml_path, json_path):
    root = ET.parse(xml_path).getroot()
    probe = json.load(open(json_path))
    inv = probe["inventory"]
    sample = {g["index"]: g for g in probe["sample"]["gpus"]}
    rows = []

    def cmp(gpu, field, smi, ours, tol=None):
        if smi is None or smi in ("N/A", "Not Supported", "[N/A]"):
            status = "n/a in nvidia-smi" if ours is None else "only gpufleet"
        elif ours is None:
            status = "ABSENT in gpufleet"
        elif tol is not None:
            status = "ok" if abs(float(smi) - float(ours)) <= tol else "MISMATCH"
        else:
            status = "ok" if str(smi).strip() == str(ours).strip() else "MISMATCH"
        rows.append((gpu, field, smi, ours, status))

    cmp("-", "driver_version", root.findtext("driver_version"), inv["driver"]["driver_version"])
    cmp("-", "cuda_version", root.findtext("cuda_version"), inv["driver"]["cuda_driver_version"])
    gpus = root.findall("gpu")
    for i, g in enumerate(gpus):
        ours = next((x for x in inv["gpus"] if x["pci_bus_id"].upper() == g.get("id", "").upper()), None)
        if ours is None:
            rows.append((i, "gpu", g.get("id"), None, "ABSENT in gpufleet"))
            continue
        s = sample.get(ours["index"], {})
        t = lambda p: g.findtext(p)
        cmp(i, "name", t("product_name"), ours["name"])
        cmp(i, "uuid", t("uuid"), ours["uuid"])
        cmp(i, "serial", t("serial"), ours["serial"])
        cmp(i, "pci_bus_id", g.get("id"), ours["pci_bus_id"])
        cmp(i, "vbios_version", t("vbios_version"), ours["vbios_version"])
        cmp(i, "inforom_image_version", t("inforom_version/img_version"), ours["inforom_image_version"])
        cmp(i, "gsp_firmware_version", t("gsp_firmware_version"), ours["gsp_firmware_version"] or None)
        cmp(i, "pcie_gen_max", num(t("pci/pci_gpu_link_info/pcie_gen/max_link_gen")), ours["pcie_link_gen_max"], 0)
        cmp(i, "pcie_width_max", num(t("pci/pci_gpu_link_info/link_widths/max_link_width")), ours["pcie_link_width_max"], 0)
        cmp(i, "pcie_gen_current", num(t("pci/pci_gpu_link_info/pcie_gen/current_link_gen")), s.get("pcie_link_gen"), 0)
        cmp(i, "pcie_width_current", num(t("pci/pci_gpu_link_info/link_widths/current_link_width")), s.get("pcie_link_width"), 0)
        mib = num(t("fb_memory_usage/total"))
        cmp(i, "memory_total_mib", mib, (ours["memory_total_bytes"] or 0) / 2**20 if ours["memory_total_bytes"] else None, 1)
        pl = num(t("gpu_power_readings/current_power_limit") or t("power_readings/power_limit"))
        cmp(i, "power_limit_w", pl, s.get("power_limit_enforced_milliwatts") and s["power_limit_enforced_milliwatts"] / 1000, 1)
        dpl = num(t("gpu_power_readings/default_power_limit") or t("power_readings/default_power_limit"))
        cmp(i, "default_power_limit_w", dpl, ours["power_limit_default_milliwatts"] and ours["power_limit_default_milliwatts"] / 1000, 1)
        cmp(i, "temperature_gpu_c", num(t("temperature/gpu_temp")), s.get("temperature_gpu_celsius"), 3)
        cmp(i, "temperature_memory_c", num(t("temperature/memory_temp")), s.get("temperature_memory_celsius"), 3)
        slow, shut = num(t("temperature/gpu_temp_slow_threshold")), num(t("temperature/gpu_temp_max_threshold"))
        # Since driver 5xx, nvidia-smi gives thresholds relative to T.Limit: the margin to T.Limit
        # now (gpu_temp_tlimit) and the margins at which slowdown / shutdown start.
        margin = num(t("temperature/gpu_temp_tlimit"))
        if slow is None and margin is not None and num(t("temperature/gpu_temp")) is not None:
            tlimit = num(t("temperature/gpu_temp")) + margin
            if num(t("temperature/gpu_temp_slow_tlimit_threshold")) is not None:
                slow = tlimit - num(t("temperature/gpu_temp_slow_tlimit_threshold"))
            if num(t("temperature/gpu_temp_max_tlimit_threshold")) is not None:
                shut = tlimit - num(t("temperature/gpu_temp_max_tlimit_threshold"))
        # Both temperatures are rounded, and read a moment apart from ours: allow 1 degree.
        cmp(i, "slowdown_c", slow, ours["temperature_slowdown_celsius"], 1)
        cmp(i, "shutdown_c", shut, ours["temperature_shutdown_celsius"], 1)
        cmp(i, "sm_clock_max_mhz", num(t("max_clocks/sm_clock")), ours["sm_clock_max_mhz"], 0)
        cmp(i, "mem_clock_max_mhz", num(t("max_clocks/mem_clock")), ours["memory_clock_max_mhz"], 0)
        pm = t("persistence_mode")
        cmp(i, "persistence_mode", None if pm is None else pm == "Enabled", ours["persistence_mode"])
        ecc = t("ecc_mode/current_ecc")
        cmp(i, "ecc_enabled", None if ecc in (None, "N/A") else ecc == "Enabled", ours["ecc_enabled"])
        mig = t("mig_mode/current_mig")
        cmp(i, "mig_enabled", None if mig in (None, "N/A") else mig == "Enabled", ours["mig_enabled"])
        cmp(i, "power_draw_w", num(t("gpu_power_readings/instant_power_draw") or t("gpu_power_readings/power_draw")),
            s.get("power_usage_milliwatts") and s["power_usage_milliwatts"] / 1000, 25)
    bad = 0
    for gpu, field, smi, ours, status in rows:
        bad += status.startswith("MISMATCH") or status.startswith("ABSENT")
        print(f"gpu {gpu!s:>2}  {field:<24} nvidia-smi={smi!s:<40} gpufleet={ours!s:<40} {status}")
    print(f"{len(rows)} fields compared, {bad} disagreement(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
