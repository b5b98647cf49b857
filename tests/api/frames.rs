//! How answers go out on the wire: a stored split, read by a plain HTTP/2 client (the `h2`
//! crate, below tonic), arrives in DATA frames short enough for h2 to write several
//! answers together (`prorata::grpc::frames`), and its bytes are the gRPC message tonic's
//! client decodes.

use bytes::{Buf, Bytes};
use prorata::grpc::frames::FRAME_BELOW_CHAIN;
use prorata::grpc::pb;
use prorata::loadgen::grpc_frame;
use prost::Message;

use crate::helpers::{order, Backend, TestApp};

#[tokio::test]
async fn a_stored_split_goes_out_in_frames_below_the_chain_threshold() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    // Twenty lines: a result longer than one frame.
    let mut o = order("O-FRAMES", "C1", "12.34");
    let line = o.lines[0].clone();
    o.lines = (0..20)
        .map(|i| pb::OrderLine {
            id: format!("L{i}"),
            ..line.clone()
        })
        .collect();
    app.commission
        .compute(pb::ComputeRequest { order: Some(o) })
        .await
        .unwrap();
    let expected = app.get_split("O-FRAMES").await.unwrap().split.unwrap();

    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!(
        "http://{}/prorata.v1.CommissionService/GetSplit",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(
        Bytes::from(grpc_frame(
            &pb::GetSplitRequest {
                order_id: "O-FRAMES".into(),
            }
            .encode_to_vec(),
        )),
        true,
    )
    .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        frames.push(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");

    assert!(
        bytes.len() > FRAME_BELOW_CHAIN,
        "a result longer than one frame: {} bytes",
        bytes.len()
    );
    assert!(
        frames.iter().all(|&n| n <= FRAME_BELOW_CHAIN),
        "every DATA frame at most {FRAME_BELOW_CHAIN} bytes: {frames:?}"
    );
    assert_eq!(frames.len(), bytes.len().div_ceil(FRAME_BELOW_CHAIN));
    let mut buf = &bytes[..];
    assert_eq!(buf.get_u8(), 0, "not compressed");
    let len = buf.get_u32() as usize;
    assert_eq!(len, buf.len(), "one message, the whole body");
    let got = pb::GetSplitResponse::decode(buf).unwrap().split.unwrap();
    assert_eq!(got, expected, "the same split tonic's client decoded");
    app.shutdown().await;
}
