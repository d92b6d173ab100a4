package nodeagent

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Enroll sends an enrollment request over nc, a connection authenticated
// with the enrollment token, and returns the registered device name. A
// refusal is a *bridge.Error: test it with errors.Is against
// bridge.ErrTokenExpired, bridge.ErrTokenUsedUp, bridge.ErrNameTaken, ….
func Enroll(ctx context.Context, nc *nats.Conn, req *bridge.EnrollRequest) (string, error) {
	req.ProtocolVersion = bridge.ProtocolVersion
	data, err := bridge.Encode(req)
	if err != nil {
		return "", err
	}
	msg, err := nc.RequestWithContext(ctx, bridge.EnrollSubject, data)
	if err != nil {
		return "", fmt.Errorf("sending enrollment request: %w", err)
	}
	resp, err := bridge.Decode[bridge.EnrollResponse](msg.Data)
	if err != nil {
		return "", err
	}
	if resp.Error != nil {
		return "", resp.Error
	}
	return resp.Device, nil
}
