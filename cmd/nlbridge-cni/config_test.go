package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/route"
)

// refConf is a conflist entry written for the reference bridge plugin,
// with only "type" changed.
const refConf = `{
  "cniVersion": "1.0.0", "name": "mynet", "type": "nlbridge",
  "bridge": "cni-test0", "isGateway": true, "ipMasq": true, "mtu": 1400,
  "hairpinMode": true, "portIsolation": true, "macspoofchk": true,
  "ipam": {"type": "host-local",
    "ranges": [[{"subnet": "10.88.0.0/16", "rangeStart": "10.88.1.10", "rangeEnd": "10.88.1.20", "gateway": "10.88.0.1"}],
               [{"subnet": "fd00:88::/64"}]],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]},
  "dns": {"nameservers": ["10.88.0.1"]},
  "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
}`

func TestParseReferenceConf(t *testing.T) {
	p, err := parseConf([]byte(refConf))
	if err != nil {
		t.Fatal(err)
	}
	want := bridge.NetworkConfig{Name: "cni-test0", MTU: 1400, DisableICC: true,
		IPv4: netip.MustParsePrefix("10.88.0.1/16"), IPv6: netip.MustParsePrefix("fd00:88::1/64")}
	if p.net != want {
		t.Errorf("network config\n got %+v\nwant %+v", p.net, want)
	}
	if !p.hostLoc || p.defRoute != [2]bool{true, true} || p.announce != 1 {
		t.Errorf("hostLoc %v defRoute %v announce %d", p.hostLoc, p.defRoute, p.announce)
	}
	if got := p.v4.ranges; len(got) != 1 || got[0] != [2]netip.Addr{netip.MustParseAddr("10.88.1.10"), netip.MustParseAddr("10.88.1.20")} {
		t.Errorf("v4 ranges %v", got)
	}
	if p.v4.whole() || !p.v6.whole() {
		t.Errorf("whole: v4 %v v6 %v", p.v4.whole(), p.v6.whole())
	}
	req, err := parseRequest(p.conf, "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;FOO=bar")
	if err != nil {
		t.Fatal(err)
	}
	if len(req.ports) != 1 || req.ports[0] != (bridge.PortMapping{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}) {
		t.Errorf("ports %+v", req.ports)
	}
}

func TestParseModes(t *testing.T) {
	for _, tc := range []struct {
		extra  string
		m4, m6 bridge.GatewayMode
	}{
		{`"isGateway": true, "ipMasq": true`, bridge.NAT, bridge.NAT},
		{`"isGateway": true`, bridge.Routed, bridge.Routed},
		{`"isDefaultGateway": true, "ipMasq": true`, bridge.NAT, bridge.NAT},
		{`"ipMasq": true`, bridge.Isolated, bridge.Isolated},
		{`"isGateway": true, "ipMasq": true, "gatewayModeIPv6": "routed"`, bridge.NAT, bridge.Routed},
		{`"gatewayMode": "nat-unprotected"`, bridge.NATUnprotected, bridge.NATUnprotected},
	} {
		p, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"nlbridge",` + tc.extra +
			`,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.extra, err)
		}
		if p.net.GatewayModeIPv4 != tc.m4 || p.net.GatewayModeIPv6 != tc.m6 {
			t.Errorf("%s: modes %v/%v, want %v/%v", tc.extra, p.net.GatewayModeIPv4, p.net.GatewayModeIPv6, tc.m4, tc.m6)
		}
		if p.net.Name != "cni0" || p.net.IPv4 != netip.MustParsePrefix("10.1.0.1/24") {
			t.Errorf("%s: defaults %+v", tc.extra, p.net)
		}
	}
}

func TestParseOwnOptions(t *testing.T) {
	p, err := parseConf([]byte(`{"cniVersion":"1.1.0","name":"n","type":"nlbridge","isGateway":true,
		"internal":true,"hostIPv4":"192.0.2.9","hostIPv6":"2001:db8::9","defaultHostIP":"127.0.0.1","announcements":0,
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.2.0.0/24","gateway":"10.2.0.254"}]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	n := p.net
	if !n.Internal || n.HostIPv4 != netip.MustParseAddr("192.0.2.9") || n.HostIPv6 != netip.MustParseAddr("2001:db8::9") ||
		n.DefaultHostIP != netip.MustParseAddr("127.0.0.1") || p.announce != 0 || n.IPv4 != netip.MustParsePrefix("10.2.0.254/24") {
		t.Errorf("got %+v announce %d", n, p.announce)
	}
}

// Each bad config gives the CNI code the spec names and the field.
func TestParseConfErrors(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"nlbridge","isGateway":true,%s"ipam":%s}`
	hl := `{"type":"host-local","subnet":"10.1.0.0/24"}`
	for _, tc := range []struct {
		extra, ipam string
		code        uint
		field       string
	}{
		{`"disableContainerInterface":true,`, hl, types.ErrUnsupportedField, "disableContainerInterface"},
		{`"vlan":10,`, hl, types.ErrUnsupportedField, "vlan"},
		{`"gatewayMode":"bogus",`, hl, types.ErrInvalidNetworkConfig, "gatewayMode"},
		{`"hostIPv4":"x",`, hl, types.ErrInvalidNetworkConfig, "hostIPv4"},
		{`"announcements":3,`, hl, types.ErrInvalidNetworkConfig, "announcements"},
		{``, `{}`, types.ErrInvalidNetworkConfig, "ipam.type"},
		{``, `{"type":"host-local"}`, types.ErrInvalidNetworkConfig, "ipam.ranges"},
		{``, `{"type":"host-local","subnet":"10.1.0.0"}`, types.ErrInvalidNetworkConfig, "subnet"},
		{``, `{"type":"host-local","subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}`, types.ErrInvalidNetworkConfig, "rangeStart"},
		{``, `{"type":"host-local","subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.5"}`, types.ErrInvalidNetworkConfig, "rangeEnd"},
		{``, `{"type":"host-local","subnet":"10.1.0.0/24","gateway":"10.9.0.1"}`, types.ErrInvalidNetworkConfig, "gateway"},
		{``, `{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}`, types.ErrUnsupportedField, "ipam.ranges[1]"},
		{``, `{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.2.0.0/24"}]]}`, types.ErrUnsupportedField, "subnet"},
		{``, `{"type":"host-local","subnet":"10.1.0.0/24","routes":[{"dst":"10.0.0.0/8","gw":"10.2.0.1"}]}`, types.ErrInvalidNetworkConfig, "ipam.routes[0].gw"},
		{``, `{"type":"host-local","subnet":"10.1.0.0/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"fd00::/8"}]}`, types.ErrInvalidNetworkConfig, "ipam.routes[1].dst"},
		{``, `{"type":"host-local","subnet":"10.1.0.0/32"}`, types.ErrInvalidNetworkConfig, "too small"},
		{`"mtu":"x",`, hl, types.ErrDecodingFailure, "mtu"},
	} {
		_, err := parseConf([]byte(strings.ReplaceAll(strings.Replace(base, "%s", tc.extra, 1), "%s", tc.ipam)))
		var te *types.Error
		if !errors.As(err, &te) {
			t.Errorf("%s %s: got %v, want a CNI error", tc.extra, tc.ipam, err)
			continue
		}
		if te.Code != tc.code || !strings.Contains(te.Msg, tc.field) {
			t.Errorf("%s %s: got code %d %q, want code %d naming %s", tc.extra, tc.ipam, te.Code, te.Msg, tc.code, tc.field)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	p, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"nlbridge","isGateway":true,
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00:1::/64"}]],
		"routes":[{"dst":"0.0.0.0/0"},{"dst":"10.96.0.0/12"},{"dst":"192.168.9.0/24","gw":"10.1.0.254"},{"dst":"fd00:9::/48"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []route.Route{
		{Dst: netip.MustParsePrefix("10.96.0.0/12"), Gw: netip.MustParseAddr("10.1.0.1")},
		{Dst: netip.MustParsePrefix("192.168.9.0/24"), Gw: netip.MustParseAddr("10.1.0.254")},
		{Dst: netip.MustParsePrefix("fd00:9::/48"), Gw: netip.MustParseAddr("fd00:1::1")},
	}
	if !slices.Equal(p.routes, want) || p.defRoute != [2]bool{true, false} {
		t.Errorf("routes %v, default %v; want %v and an IPv4 default only", p.routes, p.defRoute, want)
	}
	r := p.result(attachment{v4: netip.MustParsePrefix("10.1.0.2/24"), gw4: netip.MustParseAddr("10.1.0.1")}, types.DNS{})
	if len(r.Routes) != 4 || r.Routes[2].Dst.String() != "192.168.9.0/24" || r.Routes[2].GW.String() != "10.1.0.254" {
		t.Errorf("result routes %v", r.Routes)
	}
}

func TestClashes(t *testing.T) {
	cfg := bridge.NetworkConfig{IPv4: netip.MustParsePrefix("10.1.0.1/24"), IPv6: netip.MustParsePrefix("fd00:1::1/64")}
	for _, tc := range []struct {
		have string
		want bool
	}{
		{"10.1.0.1/24", false}, {"10.9.0.1/24", true}, {"10.1.0.1/16", true},
		{"fd00:1::1/64", false}, {"fd00:1::9/64", true}, {"fd00::1/16", true}, {"fd00:2::1/64", false}, {"fe80::1/64", false},
	} {
		if got := clashes(netip.MustParsePrefix(tc.have), cfg); got != tc.want {
			t.Errorf("clashes(%s) = %v, want %v", tc.have, got, tc.want)
		}
	}
	if clashes(netip.MustParsePrefix("10.9.0.1/24"), bridge.NetworkConfig{IPv6: cfg.IPv6}) {
		t.Error("an IPv4 address clashes with a network without IPv4")
	}
}

func TestParseRequest(t *testing.T) {
	c := &netConf{}
	// containerd's capitalised keys.
	if err := json.Unmarshal([]byte(`{"runtimeConfig":{"portMappings":[
		{"HostPort":8080,"ContainerPort":80,"Protocol":"TCP","HostIP":"127.0.0.1"},
		{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":""}],
		"mac":"02:00:00:00:00:05","ips":["10.1.0.5/24","fd00::5"]}}`), c); err != nil {
		t.Fatal(err)
	}
	r, err := parseRequest(c, "")
	if err != nil {
		t.Fatal(err)
	}
	wantPorts := []bridge.PortMapping{
		{Proto: bridge.TCP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, ContainerPort: 80},
		{Proto: bridge.UDP, HostPort: 5353, ContainerPort: 53},
	}
	if len(r.ports) != 2 || r.ports[0] != wantPorts[0] || r.ports[1] != wantPorts[1] {
		t.Errorf("ports %+v", r.ports)
	}
	if r.mac.String() != "02:00:00:00:00:05" || len(r.ips) != 2 || r.ips[0] != netip.MustParseAddr("10.1.0.5") {
		t.Errorf("mac %v ips %v", r.mac, r.ips)
	}
	// podman's restart: CNI_ARGS carry the old MAC and IP, and win.
	r, err = parseRequest(c, "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:00:09;IP=10.1.0.9")
	if err != nil {
		t.Fatal(err)
	}
	if r.mac.String() != "02:00:00:00:00:09" || len(r.ips) != 1 || r.ips[0] != netip.MustParseAddr("10.1.0.9") {
		t.Errorf("CNI_ARGS: mac %v ips %v", r.mac, r.ips)
	}
	for _, bad := range []string{"FOO=1", "IP=nope", "MAC=zz", "IP=10.0.0.1,10.0.0.2", "novalue"} {
		_, err := parseRequest(&netConf{}, bad)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("CNI_ARGS %q: got %v, want code 4", bad, err)
		}
	}
	for _, bad := range []string{`{"hostPort":0,"containerPort":80}`, `{"hostPort":1,"containerPort":80,"protocol":"icmp"}`,
		`{"hostPort":1,"containerPort":70000}`, `{"hostPort":1,"containerPort":80,"hostIP":"x"}`} {
		c := &netConf{}
		json.Unmarshal([]byte(`{"runtimeConfig":{"portMappings":[`+bad+`]}}`), c)
		_, err := parseRequest(c, "")
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "portMappings[0]") {
			t.Errorf("%s: got %v, want code 7 naming portMappings[0]", bad, err)
		}
	}
}

func TestChoose(t *testing.T) {
	pl, err := parseSet("r", []rangeConf{{Subnet: "10.1.0.0/24", RangeStart: "10.1.0.1", RangeEnd: "10.1.0.3"},
		{Subnet: "10.1.0.0/24", RangeStart: "10.1.0.100", RangeEnd: "10.1.0.100"}})
	if err != nil {
		t.Fatal(err)
	}
	used := map[netip.Addr]bool{}
	var got []string
	for range 3 {
		p, err := choose(pl, netip.Addr{}, used)
		if err != nil {
			t.Fatal(err)
		}
		used[p.Addr()] = true
		got = append(got, p.String())
	}
	// 10.1.0.1 is the gateway.
	if strings.Join(got, " ") != "10.1.0.2/24 10.1.0.3/24 10.1.0.100/24" {
		t.Errorf("allocated %v", got)
	}
	var te *types.Error
	if _, err := choose(pl, netip.Addr{}, used); !errors.As(err, &te) || te.Code != codeConflict {
		t.Errorf("exhausted: %v", err)
	}
	if _, err := choose(pl, netip.MustParseAddr("10.1.0.2"), used); !errors.As(err, &te) || te.Code != codeConflict {
		t.Errorf("taken: %v", err)
	}
	for _, bad := range []string{"10.1.0.1", "10.2.0.1"} {
		if _, err := choose(pl, netip.MustParseAddr(bad), used); !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if p, err := choose(pl, netip.MustParseAddr("10.1.0.50"), used); err != nil || p.String() != "10.1.0.50/24" {
		t.Errorf("wanted in subnet: %v %v", p, err)
	}
	if p, err := choose(nil, netip.Addr{}, used); err != nil || p.IsValid() {
		t.Errorf("no pool: %v %v", p, err)
	}
}

// The result has the reference plugin's shape and converts to every
// version the plugin speaks.
func TestResultVersions(t *testing.T) {
	p, err := parseConf([]byte(refConf))
	if err != nil {
		t.Fatal(err)
	}
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	a := attachment{bridge: "cni-test0", hostName: "veth1234", bridgeMAC: mac("02:00:00:00:00:01"),
		hostMAC: mac("02:00:00:00:00:02"), mac: mac("02:42:0a:58:01:0a"), ifName: "eth0", netns: "/run/netns/x",
		v4: netip.MustParsePrefix("10.88.1.10/16"), v6: netip.MustParsePrefix("fd00:88::2/64"),
		gw4: netip.MustParseAddr("10.88.0.1"), gw6: netip.MustParseAddr("fd00:88::1")}
	r := p.result(a, types.DNS{})
	if len(r.Interfaces) != 3 || r.Interfaces[2].Sandbox != "/run/netns/x" || r.Interfaces[0].Sandbox != "" ||
		r.Interfaces[1].Name != "veth1234" {
		t.Fatalf("interfaces %+v", r.Interfaces)
	}
	if len(r.IPs) != 2 || *r.IPs[0].Interface != 2 || r.IPs[0].Gateway.String() != "10.88.0.1" || r.IPs[1].Address.String() != "fd00:88::2/64" {
		t.Fatalf("ips %+v", r.IPs)
	}
	if len(r.Routes) != 2 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[1].GW.String() != "fd00:88::1" {
		t.Fatalf("routes %+v", r.Routes)
	}
	if len(r.DNS.Nameservers) != 1 {
		t.Errorf("dns %+v", r.DNS)
	}
	for _, v := range versions.SupportedVersions() {
		conv, err := r.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		b, err := json.Marshal(conv)
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			CNIVersion string `json:"cniVersion"`
			IPs        []struct {
				Version   string `json:"version"`
				Address   string `json:"address"`
				Interface *int   `json:"interface"`
			} `json:"ips"`
			Interfaces []map[string]string `json:"interfaces"`
		}
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.CNIVersion != v || len(back.IPs) != 2 || back.IPs[0].Address != "10.88.1.10/16" || *back.IPs[0].Interface != 2 ||
			len(back.Interfaces) != 3 {
			t.Errorf("%s: %s", v, b)
		}
		if old := v < "1.0.0"; old != (back.IPs[0].Version == "4") {
			t.Errorf("%s: ips[0].version %q", v, back.IPs[0].Version)
		}
		// What a chained plugin reads back as prevResult.
		pa, err := fromPrev(conv, "eth0")
		if err != nil || pa.mac != "02:42:0a:58:01:0a" || pa.host != "veth1234" || len(pa.addrs) != 2 || pa.netns != "/run/netns/x" {
			t.Errorf("%s: prevResult %+v %v", v, pa, err)
		}
	}
	if _, err := fromPrev(&current.Result{CNIVersion: "1.0.0"}, "eth0"); err == nil {
		t.Error("prevResult without the interface accepted")
	}
}

func TestLibError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{&bridge.Error{Op: "attach", Field: "NetNS", Value: "/x", Kind: bridge.ErrInvalid}, types.ErrInvalidEnvironmentVariables},
		{&bridge.Error{Op: "create network", Field: "MTU", Value: "1", Kind: bridge.ErrInvalid}, types.ErrInvalidNetworkConfig},
		{&bridge.Error{Op: "attach", Field: "ID", Value: "c/eth0", Kind: bridge.ErrExists}, codeExists},
		{&bridge.Error{Op: "attach", Field: "Ports[0]", Value: "tcp *:80->80", Kind: bridge.ErrConflict}, codeConflict},
		{&bridge.Error{Op: "attach", Kind: bridge.ErrClosed}, types.ErrTryAgainLater},
		{&bridge.Error{Op: "attach", Err: errors.New("boom")}, types.ErrInternal},
		{types.NewError(types.ErrTryAgainLater, "x", ""), types.ErrTryAgainLater},
	} {
		var te *types.Error
		if err := libError(tc.err); !errors.As(err, &te) || te.Code != tc.code || te.Msg == "" {
			t.Errorf("%v: got %v, want code %d", tc.err, err, tc.code)
		}
	}
	if libError(nil) != nil {
		t.Error("nil error mapped to an error")
	}
}

func TestAnnouncement(t *testing.T) {
	p, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"nlbridge","isGateway":true,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if adv, sc := p.announcement(); adv.Count != 0 || len(sc) != 1 || sc[0] != "net.ipv4.conf.IFNAME.arp_notify=1" {
		t.Errorf("IPv4 only: %+v %v", adv, sc)
	}
	p, _ = parseConf([]byte(refConf))
	if adv, sc := p.announcement(); adv.Count != 1 || sc != nil {
		t.Errorf("dual-stack: %+v %v", adv, sc)
	}
	p.announce = 0
	if adv, sc := p.announcement(); adv.Count != 0 || sc != nil {
		t.Errorf("announcements 0: %+v %v", adv, sc)
	}
}

func TestParseForDel(t *testing.T) {
	p, err := parseForDel([]byte(`{"cniVersion":"1.0.0","name":"n","type":"nlbridge","bridge":"br9","vlan":3,"ipam":{"type":"dhcp"}}`))
	if err != nil || p.net.Name != "br9" || p.hostLoc || p.conf.IPAM.Type != "dhcp" {
		t.Errorf("got %+v %v", p, err)
	}
	if _, err := parseForDel([]byte(`{`)); err == nil {
		t.Error("undecodable config accepted")
	}
}
