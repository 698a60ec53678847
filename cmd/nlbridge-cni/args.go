package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nlbridge/bridge"
)

// runtimeConfig holds the capabilities the plugin takes from the runtime.
// JSON keys match case-insensitively, so podman's hostPort and
// containerd's HostPort both land here.
type runtimeConfig struct {
	PortMappings []portMapping `json:"portMappings"`
	MAC          string        `json:"mac"`
	IPs          []string      `json:"ips"`
}

type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

// request is what the runtime asks of one ADD beyond the network config.
type request struct {
	ports []bridge.PortMapping
	mac   net.HardwareAddr
	ips   []netip.Addr // wanted addresses, at most one per family
}

// argsError is bad CNI_ARGS or environment (CNI code 4).
func argsError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf(format, a...), "")
}

// parseRequest reads runtimeConfig, the config's args and CNI_ARGS.
// CNI_ARGS wins over runtimeConfig for MAC and IP (podman sends both the
// same way on restart).
func parseRequest(c *netConf, cniArgs string) (*request, error) {
	r := &request{}
	for i, m := range c.RuntimeConfig.PortMappings {
		pm, err := m.mapping(i)
		if err != nil {
			return nil, err
		}
		r.ports = append(r.ports, pm)
	}
	mac, ips := c.RuntimeConfig.MAC, append(append([]string(nil), c.RuntimeConfig.IPs...), c.Args.CNI.IPs...)
	field := "runtimeConfig"
	kv, err := parseCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	if v, ok := kv["MAC"]; ok {
		mac, field = v, "CNI_ARGS"
	}
	if v, ok := kv["IP"]; ok {
		ips = strings.Split(v, ",")
	}
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			if field == "CNI_ARGS" {
				return nil, argsError("CNI_ARGS MAC=%s: want a 48-bit MAC address", mac)
			}
			return nil, configError("runtimeConfig.mac", quote(mac), "want a 48-bit MAC address")
		}
		r.mac = hw
	}
	var have [2]bool
	for _, s := range ips {
		s = strings.TrimSpace(s)
		a, err := netip.ParseAddr(s)
		if err != nil {
			p, perr := netip.ParsePrefix(s) // runtimeConfig.ips may carry a length
			if perr != nil {
				return nil, argsError("IP %q: want an IP address", s)
			}
			a = p.Addr()
		}
		a = a.Unmap()
		fam := 0
		if a.Is6() {
			fam = 1
		}
		if have[fam] {
			return nil, argsError("IP %q: one address per family", s)
		}
		have[fam] = true
		r.ips = append(r.ips, a)
	}
	return r, nil
}

func (m portMapping) mapping(i int) (bridge.PortMapping, error) {
	f := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
	pm := bridge.PortMapping{}
	switch strings.ToLower(m.Protocol) {
	case "tcp", "":
		pm.Proto = bridge.TCP
	case "udp":
		pm.Proto = bridge.UDP
	case "sctp":
		pm.Proto = bridge.SCTP
	default:
		return pm, configError(f+".protocol", quote(m.Protocol), "want tcp, udp or sctp")
	}
	if m.ContainerPort < 1 || m.ContainerPort > 65535 {
		return pm, configError(f+".containerPort", m.ContainerPort, "want 1-65535")
	}
	if m.HostPort < 1 || m.HostPort > 65535 {
		return pm, configError(f+".hostPort", m.HostPort, "want 1-65535")
	}
	pm.ContainerPort, pm.HostPort = uint16(m.ContainerPort), uint16(m.HostPort)
	if m.HostIP != "" {
		a, err := netip.ParseAddr(m.HostIP)
		if err != nil || a.Zone() != "" {
			return pm, configError(f+".hostIP", quote(m.HostIP), "want an IP address")
		}
		pm.HostIP = a.Unmap() // 0.0.0.0 or :: = every address of that family
	}
	return pm, nil
}

// parseCNIArgs splits CNI_ARGS "K=V;K=V". Keys other than IgnoreUnknown,
// K8S_* , IP and MAC are refused unless IgnoreUnknown is set, as the
// convention says.
func parseCNIArgs(s string) (map[string]string, error) {
	kv := map[string]string{}
	if s == "" {
		return kv, nil
	}
	var unknown []string
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, argsError("CNI_ARGS %q: want KEY=VALUE pairs separated by ';'", s)
		}
		kv[k] = v
		switch {
		case k == "IgnoreUnknown", k == "IP", k == "MAC", strings.HasPrefix(k, "K8S_"):
		default:
			unknown = append(unknown, k)
		}
	}
	if ig := strings.ToLower(kv["IgnoreUnknown"]); len(unknown) > 0 && ig != "1" && ig != "true" {
		return nil, argsError("CNI_ARGS: unknown key %s (set IgnoreUnknown=1 to ignore it)", unknown[0])
	}
	return kv, nil
}
