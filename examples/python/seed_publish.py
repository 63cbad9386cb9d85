# The source document's producer, exactly as it is written there (comments translated).
# It runs unchanged against tensorq: start `tensorq server` (or `tensorq server --serve ...`)
# on localhost:5672, then `python seed_publish.py`.
import pika

# Connect to the RabbitMQ server
connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
channel = connection.channel()

# Declare a queue
channel.queue_declare(queue='ai_queue')

# Send a message to the queue
channel.basic_publish(exchange='', routing_key='ai_queue', body='Hello World!')

# Close the connection
connection.close()
