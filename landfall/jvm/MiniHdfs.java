// A one-process HDFS for the tests of a lake at hdfs:// (tests/hdfs.py starts it).
//
// Usage: java -cp '.deps/hdfs/classes:.deps/hdfs/libs/*' MiniHdfs DATA_DIR RPC_PORT HTTP_PORT
// (a port of 0 takes a free one). One NameNode and one DataNode on the loopback
// interface, WebHDFS on, data under DATA_DIR. When both answer it prints one line,
//   {"rpc_port": N, "http_port": M}
// on stdout, then runs until it is killed (SIGTERM shuts the cluster down in order).

import java.io.File;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public final class MiniHdfs {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: MiniHdfs DATA_DIR RPC_PORT HTTP_PORT");
            System.exit(2);
        }
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(args[0]).getAbsolutePath());
        // One DataNode: a block cannot have more replicas than there are nodes.
        conf.setInt("dfs.replication", 1);
        conf.setBoolean("dfs.webhdfs.enabled", true);
        // Everything on the loopback interface, nothing reachable from elsewhere.
        conf.set("dfs.namenode.http-address", "127.0.0.1:" + args[2]);
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        // Clients (WebHDFS's redirects, Spark) reach the DataNode by its address, not by a
        // host name that may not resolve.
        conf.setBoolean("dfs.client.use.datanode.hostname", false);
        conf.setBoolean("dfs.datanode.use.datanode.hostname", false);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
                .numDataNodes(1)
                .nameNodePort(Integer.parseInt(args[1]))
                .nameNodeHttpPort(Integer.parseInt(args[2]))
                .format(true)
                .build();
        cluster.waitActive();
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
        System.out.printf("{\"rpc_port\": %d, \"http_port\": %d}%n",
                cluster.getNameNodePort(), cluster.getNameNode().getHttpAddress().getPort());
        System.out.flush();
        Thread.currentThread().join();
    }
}
